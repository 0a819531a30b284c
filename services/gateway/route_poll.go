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
		healthy, models := pollOnce(ctx, health, inference)
		state.observe(i, started, healthy, models)
		if healthy != wasHealthy {
			logger.Info("inference replica health changed", "backend", conn.Target(), "healthy", healthy)
			wasHealthy = healthy
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// pollOnce asks one replica for its health and its loaded models. models is nil when the list
// could not be read: a replica with API keys on refuses the gateway's anonymous call, and the
// router then knows only where it sent requests itself.
func pollOnce(ctx context.Context, health healthpb.HealthClient, inference llmopsv1.InferenceServiceClient) (healthy bool, models map[string]bool) {
	ctx, cancel := context.WithTimeout(ctx, pollInterval)
	defer cancel()
	serving, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || serving.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return false, nil
	}
	served, err := inference.ListServedModels(ctx, &llmopsv1.ListServedModelsRequest{})
	switch status.Code(err) {
	case codes.OK:
	case codes.Unavailable:
		return false, nil
	default:
		return true, nil
	}
	models = map[string]bool{}
	for _, base := range served.GetModels() {
		models[base.GetModel()] = true
		for _, adapter := range base.GetAdapters() {
			models[adapter.GetModel()] = true
		}
	}
	return true, models
}
