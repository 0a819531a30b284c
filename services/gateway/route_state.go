package main

// What the router knows about its Inference replicas: health, requests in flight, which models
// each holds, and which model id a reference (a name or name@alias) resolved to. One mutex
// guards it all; every operation under it is a few map lookups.

import (
	"sync"
	"time"
)

const (
	// maxLearned caps the per-replica and reference maps, so a stream of distinct model
	// references cannot grow the gateway without bound (they are rebuilt as requests come).
	maxLearned = 4096
	// resolvedTTL is how long a reference's resolved id is trusted: an alias can be moved to
	// another model, and a stale entry would only send a few requests to a colder replica.
	resolvedTTL = 30 * time.Second
)

// replicaState is one Inference replica.
type replicaState struct {
	addr     string
	healthy  bool
	inflight int
	polled   map[string]bool      // model ids in its last ListServedModels answer
	routed   map[string]time.Time // model keys the router sent there, and when
}

// routeState is the router's view of all replicas.
type routeState struct {
	mu         sync.Mutex
	replicas   []*replicaState
	resolved   map[string]resolvedRef // model reference → model id, learned from answers
	roundRobin bool
	prev       int // last replica round-robin chose
	now        func() time.Time
}

type resolvedRef struct {
	id   string
	seen time.Time
}

func newRouteState(addrs []string, roundRobin bool) *routeState {
	s := &routeState{resolved: map[string]resolvedRef{}, roundRobin: roundRobin, prev: -1, now: time.Now}
	for _, addr := range addrs {
		// Healthy until the first poll says otherwise: requests in the first second after
		// startup are served rather than refused.
		s.replicas = append(s.replicas, &replicaState{addr: addr, healthy: true, polled: map[string]bool{}, routed: map[string]time.Time{}})
	}
	return s
}

// key is what a request for ref is routed by: the model id ref last resolved to, else ref.
func (s *routeState) key(ref string) string {
	if r, ok := s.resolved[ref]; ok && s.now().Sub(r.seen) < resolvedTTL {
		return r.id
	}
	return ref
}

// acquire chooses the replica for a request for model reference ref, counts the request in
// flight there and remembers the choice (the model will be loaded there). The caller calls
// release with the returned index when the request ends.
func (s *routeState) acquire(ref string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := s.key(ref)
	cands := make([]candidate, len(s.replicas))
	for i, r := range s.replicas {
		_, routed := r.routed[key]
		cands[i] = candidate{addr: r.addr, healthy: r.healthy, inflight: r.inflight, holds: r.polled[key] || routed}
	}
	var chosen int
	if s.roundRobin {
		chosen = chooseRoundRobin(cands, s.prev)
		s.prev = chosen
	} else {
		chosen = chooseAffinity(cands, key)
	}
	r := s.replicas[chosen]
	r.inflight++
	if len(r.routed) >= maxLearned {
		clear(r.routed)
	}
	r.routed[key] = s.now()
	return chosen
}

// release ends a request on replica i. unavailable says it failed with UNAVAILABLE: the
// replica is skipped until a poll finds it serving again.
func (s *routeState) release(i int, unavailable bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replicas[i].inflight--
	if unavailable {
		s.replicas[i].healthy = false
	}
}

// learn records that ref resolved to model id (from an answer's `model` field), so later
// requests by id, name or alias share one key and one replica.
func (s *routeState) learn(ref, id string) {
	if id == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.resolved) >= maxLearned {
		clear(s.resolved)
	}
	s.resolved[ref] = resolvedRef{id: id, seen: s.now()}
	for _, r := range s.replicas {
		if t, ok := r.routed[ref]; ok && ref != id {
			r.routed[id] = t
		}
	}
}

// observe records one poll of replica i, started at `started`: its health and, when listed,
// the model ids it holds. Routing decisions made before the poll started are then covered by
// the poll's answer (an adapter evicted since is dropped); later ones are kept.
func (s *routeState) observe(i int, started time.Time, healthy bool, models map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.replicas[i]
	r.healthy = healthy
	if models == nil { // not listed (the replica is down, or the call was refused)
		return
	}
	r.polled = models
	for key, t := range r.routed {
		if t.Before(started) {
			delete(r.routed, key)
		}
	}
}

// healthyCount is how many replicas are healthy now.
func (s *routeState) healthyCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.replicas {
		if r.healthy {
			n++
		}
	}
	return n
}

// healthyReplicas lists the indexes of the healthy replicas, in list order.
func (s *routeState) healthyReplicas() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var healthy []int
	for i, r := range s.replicas {
		if r.healthy {
			healthy = append(healthy, i)
		}
	}
	return healthy
}

// markUnavailable records that replica i answered UNAVAILABLE outside a routed request: it is
// skipped until a poll finds it serving again.
func (s *routeState) markUnavailable(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replicas[i].healthy = false
}

// addr is replica i's backend address as configured (fixed at startup).
func (s *routeState) addr(i int) string {
	return s.replicas[i].addr
}
