package main

// The choice of an Inference replica for one request, as a pure function of what the router
// knows: which replicas are healthy, which already hold the model, and how many requests each
// has in flight. Kept free of I/O and locks so the unit tests can state the rules directly.

import (
	"hash/fnv"
	"math"
	"slices"
)

// loadFactor and minLoadBound bound how many requests a replica may have in flight and still
// take one more by affinity or hash: loadFactor times the mean (consistent hashing with bounded
// loads, KubeAI's factor), but never fewer than minLoadBound. Over the bound a hot adapter spills
// onto the next replica by hash instead of piling onto one. The floor is there because the
// engine batches concurrent requests, so a few more on one replica cost little, while a spill
// costs an adapter load and may evict another adapter there: without it, chance bunching at
// low concurrency spilled often enough to halve the cache hit rate (bench/routing.py).
const (
	loadFactor   = 1.25
	minLoadBound = 8
)

// candidate is one replica as the chooser sees it.
type candidate struct {
	addr     string
	healthy  bool
	inflight int
	holds    bool // the model is loaded there (polled, or routed there recently)
}

// hrwScore is the rendezvous (highest random weight) score of a replica for a key. Each
// replica's score depends only on its own address and the key, so adding or removing a replica
// moves only the keys whose top score it holds: about 1/N of them.
func hrwScore(addr, key string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(addr))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(key))
	return mix64(h.Sum64())
}

// mix64 is splitmix64's finalizer: FNV alone leaves nearby inputs with correlated high bits,
// which would make one replica win most keys.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// hrwOrder returns the indexes of cands from the highest score for key to the lowest.
func hrwOrder(cands []candidate, key string) []int {
	scores := make([]uint64, len(cands))
	order := make([]int, len(cands))
	for i, c := range cands {
		scores[i] = hrwScore(c.addr, key)
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return 0
	})
	return order
}

// loadBound is the most requests a replica may have in flight, this one included: loadFactor
// times the mean once this request is counted, rounded up, and at least minLoadBound.
func loadBound(cands []candidate, eligible []int) int {
	total := 1
	for _, i := range eligible {
		total += cands[i].inflight
	}
	return max(int(math.Ceil(loadFactor*float64(total)/float64(len(eligible)))), minLoadBound)
}

// chooseAffinity picks the replica for a model key:
//
//  1. among healthy replicas that hold the model and are under the load bound, the one with the
//     highest HRW score. Not the least loaded one: that would alternate a model between every
//     replica holding it and keep each of them holding it, which is round-robin again once
//     adapters outnumber a replica's budget (bench/routing.py showed the hit rate fall);
//  2. otherwise the healthy replica with the highest HRW score for the key that is under the
//     load bound (it will load the model, and later requests for it follow by affinity);
//  3. with no healthy replica, the HRW choice among all, so the caller gets the real error (or
//     an answer, if the health view was stale).
//
// It returns -1 only for an empty list.
func chooseAffinity(cands []candidate, key string) int {
	if len(cands) == 0 {
		return -1
	}
	order := hrwOrder(cands, key)
	eligible := make([]int, 0, len(order))
	for _, i := range order {
		if cands[i].healthy {
			eligible = append(eligible, i)
		}
	}
	if len(eligible) == 0 {
		return order[0]
	}
	bound := loadBound(cands, eligible)
	for _, i := range eligible { // in HRW order
		if cands[i].holds && cands[i].inflight+1 <= bound {
			return i
		}
	}
	for _, i := range eligible {
		if cands[i].inflight+1 <= bound {
			return i
		}
	}
	return eligible[0] // not reached: the least loaded replica is always under the bound
}

// chooseRoundRobin picks the next healthy replica after prev in list order (the baseline that
// a Kubernetes Service gives), or the next one at all when none is healthy.
func chooseRoundRobin(cands []candidate, prev int) int {
	n := len(cands)
	if n == 0 {
		return -1
	}
	for step := 1; step <= n; step++ {
		i := ((prev+step)%n + n) % n
		if cands[i].healthy {
			return i
		}
	}
	return ((prev+1)%n + n) % n
}
