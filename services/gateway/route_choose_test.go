package main

import (
	"fmt"
	"testing"
)

func healthyCandidates(addrs ...string) []candidate {
	cands := make([]candidate, len(addrs))
	for i, addr := range addrs {
		cands[i] = candidate{addr: addr, healthy: true}
	}
	return cands
}

func modelKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("mdl-%012d", i)
	}
	return keys
}

func TestAffinityPrefersAReplicaThatHoldsTheModel(t *testing.T) {
	for _, key := range modelKeys(20) {
		cands := healthyCandidates("a:1", "b:1", "c:1")
		byHash := chooseAffinity(cands, key)
		holder := (byHash + 1) % len(cands)
		cands[holder].holds = true
		if got := chooseAffinity(cands, key); got != holder {
			t.Fatalf("%s: chose %d, but %d holds the model (hash alone picks %d)", key, got, holder, byHash)
		}
	}
}

func TestHashingIsStableAndBalanced(t *testing.T) {
	keys := modelKeys(3000)
	cands := healthyCandidates("a:1", "b:1", "c:1")
	counts := map[int]int{}
	for _, key := range keys {
		first := chooseAffinity(cands, key)
		if again := chooseAffinity(cands, key); again != first {
			t.Fatalf("%s: %d then %d", key, first, again)
		}
		counts[first]++
	}
	for i := range cands {
		if counts[i] < 800 || counts[i] > 1200 { // 1000 each, give or take
			t.Errorf("replica %d got %d of 3000 models", i, counts[i])
		}
	}
}

func TestAJoiningReplicaMovesOnlyItsShareOfModels(t *testing.T) {
	keys := modelKeys(3000)
	three := healthyCandidates("a:1", "b:1", "c:1")
	four := healthyCandidates("a:1", "b:1", "c:1", "d:1")
	moved := 0
	for _, key := range keys {
		before, after := chooseAffinity(three, key), chooseAffinity(four, key)
		if before != after {
			moved++
			if after != 3 {
				t.Fatalf("%s moved from %s to %s, not to the new replica", key, three[before].addr, four[after].addr)
			}
		}
	}
	if moved < 600 || moved > 900 { // 1/4 of 3000 = 750
		t.Errorf("%d of 3000 models moved when a fourth replica joined", moved)
	}
}

func TestALeavingReplicaMovesOnlyItsOwnModels(t *testing.T) {
	keys := modelKeys(3000)
	three := healthyCandidates("a:1", "b:1", "c:1")
	two := healthyCandidates("a:1", "c:1") // b left
	moved := 0
	for _, key := range keys {
		before := three[chooseAffinity(three, key)].addr
		after := two[chooseAffinity(two, key)].addr
		if before != after {
			moved++
			if before != "b:1" {
				t.Fatalf("%s moved from %s to %s though %s is still there", key, before, after, before)
			}
		}
	}
	if moved < 850 || moved > 1150 { // 1/3 of 3000
		t.Errorf("%d of 3000 models moved when one of three replicas left", moved)
	}
}

func TestUnhealthyReplicasAreSkipped(t *testing.T) {
	for _, key := range modelKeys(50) {
		cands := healthyCandidates("a:1", "b:1", "c:1")
		preferred := chooseAffinity(cands, key)
		cands[preferred].holds = true
		cands[preferred].healthy = false
		got := chooseAffinity(cands, key)
		if got == preferred {
			t.Fatalf("%s: chose the unhealthy replica %d", key, got)
		}
		cands[preferred].healthy = true
		if got := chooseAffinity(cands, key); got != preferred {
			t.Fatalf("%s: the replica did not get its model back once healthy (chose %d)", key, got)
		}
	}
	down := []candidate{{addr: "a:1"}, {addr: "b:1"}}
	if got := chooseAffinity(down, "m"); got < 0 {
		t.Error("with every replica down, a choice is still made (the call then fails for real)")
	}
}

func TestHoldersAreTakenInHashOrderUnderTheLoadBound(t *testing.T) {
	cands := healthyCandidates("a:1", "b:1", "c:1")
	for i := range cands {
		cands[i].holds = true
	}
	order := hrwOrder(cands, "m")
	// Under the bound, the hash's first holder keeps the model even when busier than the
	// others: moving it would make every holder keep it loaded.
	cands[order[0]].inflight = minLoadBound - 1
	if got := chooseAffinity(cands, "m"); got != order[0] {
		t.Errorf("chose %d, not the hash's first holder %d", got, order[0])
	}
	// Over the bound (the floor, above 1.25 x the mean), the next holder by hash takes it.
	cands[order[0]].inflight = minLoadBound
	cands[order[1]].inflight = 1
	if got := chooseAffinity(cands, "m"); got != order[1] {
		t.Errorf("chose %d, not the next holder %d", got, order[1])
	}
	// Over 1.25 x the mean (ceil(1.25 * (24 + 10 + 10 + 1) / 3) = 19), the same.
	cands[order[0]].inflight, cands[order[1]].inflight, cands[order[2]].inflight = 24, 10, 10
	if got := chooseAffinity(cands, "m"); got != order[1] {
		t.Errorf("chose %d, not the next holder %d", got, order[1])
	}
	cands[order[0]].inflight = 14 // ceil(1.25 * (14 + 10 + 10 + 1) / 3) = 15
	if got := chooseAffinity(cands, "m"); got != order[0] {
		t.Errorf("chose %d, though the first holder %d is under the bound", got, order[0])
	}
}

func TestAnOverloadedReplicaSpillsToTheNextByHash(t *testing.T) {
	cands := healthyCandidates("a:1", "b:1")
	order := hrwOrder(cands, "m")
	top, next := order[0], order[1]
	cands[top].holds = true
	cands[top].inflight = minLoadBound // one more would be over the floor
	if got := chooseAffinity(cands, "m"); got != next {
		t.Errorf("chose %d with %d in flight there; want the spill to %d", got, cands[got].inflight, next)
	}
	cands[top].inflight = minLoadBound - 1
	if got := chooseAffinity(cands, "m"); got != top {
		t.Errorf("chose %d, though the holder %d is under the bound", got, top)
	}
	// Nobody holds it: the hash's first unless it is over the bound.
	cands[top].holds = false
	if got := chooseAffinity(cands, "m"); got != top {
		t.Errorf("chose %d for a model nobody holds; want the hash's first %d", got, top)
	}
	cands[top].inflight = minLoadBound
	if got := chooseAffinity(cands, "m"); got != next {
		t.Errorf("chose %d; want the spill to %d", got, next)
	}
}

func TestRoundRobinCyclesOverHealthyReplicas(t *testing.T) {
	cands := healthyCandidates("a:1", "b:1", "c:1")
	cands[1].healthy = false
	prev, got := -1, []int{}
	for range 4 {
		prev = chooseRoundRobin(cands, prev)
		got = append(got, prev)
	}
	if fmt.Sprint(got) != "[0 2 0 2]" {
		t.Errorf("round robin chose %v", got)
	}
	if chooseAffinity(nil, "m") != -1 || chooseRoundRobin(nil, -1) != -1 {
		t.Error("an empty list has no choice")
	}
}
