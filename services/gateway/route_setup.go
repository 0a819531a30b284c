package main

// How the gateway reaches the Inference service: over the one backend connection (one replica,
// or several behind a Kubernetes Service that spreads connections), or, with
// -inference-backends, over one connection per replica with the router choosing per request.

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"google.golang.org/grpc"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

const (
	routingAffinity   = "affinity"
	routingRoundRobin = "round-robin"
)

// addressList is a flag of comma-separated addresses; empty items are refused.
type addressList []string

func (l *addressList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *addressList) Set(raw string) error {
	*l = nil
	if strings.TrimSpace(raw) == "" {
		return nil
	}
	for _, item := range strings.Split(raw, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return errors.New("an empty address in the list")
		}
		*l = append(*l, item)
	}
	return nil
}

// inferenceClient is the client the Inference routes use, and a function that closes what it
// opened. The replicas' poll runs until ctx ends; with tr, calls to the replicas have client
// spans as calls to the services do.
func inferenceClient(ctx context.Context, cfg Config, conn *grpc.ClientConn, tr *tracing, logger *slog.Logger) (llmopsv1.InferenceServiceClient, func(), error) {
	if len(cfg.InferenceBackends) == 0 {
		return llmopsv1.NewInferenceServiceClient(conn), func() {}, nil
	}
	conns := make([]*grpc.ClientConn, 0, len(cfg.InferenceBackends))
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
	for _, address := range cfg.InferenceBackends {
		c, err := dialAddress(cfg, address, tr)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		conns = append(conns, c)
	}
	state := newRouteState(cfg.InferenceBackends, cfg.InferenceRouting == routingRoundRobin)
	pollCtx, stop := context.WithCancel(ctx)
	pollReplicas(pollCtx, state, conns, logger)
	return newRoutedInference(state, conns, logger), func() { stop(); closeAll() }, nil
}
