package main

// The router's poll of each Inference replica: its grpc.health.v1 status (a replica that is
// down or draining is skipped) and its ListServedModels (which bases and adapters it holds).

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

// pollInterval is how often each replica is polled: the time a replica that came back waits
// before it gets traffic again, and how stale the view of loaded adapters may be.
const pollInterval = time.Second

// pollTimeout bounds one poll. A poll that runs out of time says nothing about health: a replica
// busy decoding may answer slowly, and marking it unhealthy would move its adapters elsewhere.
const pollTimeout = 2 * time.Second

// verdict is what one poll found out about a replica's health.
type verdict int

const (
	unknown   verdict = iota // the poll timed out: keep what was known
	healthy                  // SERVING
	unhealthy                // NOT_SERVING, or not answering at all
)

// pollReplicas polls every replica until ctx ends, each on its own goroutine (a replica that
// hangs delays only its own view).
func pollReplicas(ctx context.Context, state *routeState, conns []*grpc.ClientConn, logger *slog.Logger) {
	for i, conn := range conns {
		go pollReplica(ctx, state, i, conn, logger)
	}
}

func pollReplica(ctx context.Context, state *routeState, i int, conn *grpc.ClientConn, logger *slog.Logger) {
	health := healthpb.NewHealthClient(conn)
	inference := llmopsv1.NewInferenceServiceClient(conn)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	wasHealthy := true
	for {
		started := time.Now()
		found, models := pollOnce(ctx, health, inference)
		if found != unknown {
			state.observe(i, started, found == healthy, models)
			if (found == healthy) != wasHealthy {
				wasHealthy = found == healthy
				logger.Info("inference replica health changed", "backend", conn.Target(), "healthy", wasHealthy)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// pollOnce asks one replica for its health and its loaded models. The models are nil when the
// list could not be read: a replica with API keys on refuses the gateway's anonymous call, and
// the router then knows only where it sent requests itself.
func pollOnce(ctx context.Context, health healthpb.HealthClient, inference llmopsv1.InferenceServiceClient) (verdict, map[string]bool) {
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	serving, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
	switch {
	case status.Code(err) == codes.DeadlineExceeded:
		return unknown, nil
	case err != nil || serving.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		return unhealthy, nil
	}
	served, err := inference.ListServedModels(ctx, &llmopsv1.ListServedModelsRequest{})
	switch status.Code(err) {
	case codes.OK:
	case codes.Unavailable:
		return unhealthy, nil
	default: // refused (API keys on) or slow: healthy by its health check, models unknown
		return healthy, nil
	}
	models := map[string]bool{}
	for _, base := range served.GetModels() {
		models[base.GetModel()] = true
		for _, adapter := range base.GetAdapters() {
			models[adapter.GetModel()] = true
		}
	}
	return healthy, models
}
