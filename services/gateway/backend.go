package main

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// maxResponseBytes is the largest gRPC message the gateway accepts from the services.
const maxResponseBytes = 64 << 20

// readyTimeout bounds the health check behind /readyz.
const readyTimeout = 2 * time.Second

// dialBackend makes the one client connection every route shares. It connects lazily and, after
// the services restart, retries within seconds (gRPC's default backoff grows to two minutes).
// Plaintext unless cfg asks for TLS (backendCredentials); a certificate or key file that cannot be
// read or parsed is an error here, at startup. With tr, every call has a client span.
func dialBackend(cfg Config, tr *tracing) (*grpc.ClientConn, error) {
	return dialAddress(cfg, cfg.Backend, tr)
}

// dialAddress connects to one gRPC address with the backend's settings (TLS, message size,
// backoff, deadlines, and client spans with tr): the services' address, or one Inference
// replica's.
func dialAddress(cfg Config, address string, tr *tracing) (*grpc.ClientConn, error) {
	creds, err := backendCredentials(cfg)
	if err != nil {
		return nil, err
	}
	options := append(tr.dialOptions(),
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponseBytes)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithChainUnaryInterceptor(unaryDeadline(cfg.Timeout)),
		grpc.WithChainStreamInterceptor(streamDeadline(cfg.Timeout, cfg.StreamTimeout)),
	)
	return grpc.NewClient(address, options...)
}

// unaryDeadline gives a call without a deadline (no Grpc-Timeout header) one of d.
func unaryDeadline(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// streamDeadline gives a streaming call without a deadline one: streamD for server streams
// (watches and generation may run long; 0 leaves them to the client's disconnect), unaryD for
// client streams (uploads).
func streamDeadline(unaryD, streamD time.Duration) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		d := unaryD
		if desc.ServerStreams {
			d = streamD
		}
		if _, ok := ctx.Deadline(); ok || d == 0 {
			return streamer(ctx, desc, cc, method, opts...)
		}
		ctx, cancel := context.WithTimeout(ctx, d)
		stream, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			cancel()
			return nil, err
		}
		return &cancelOnEnd{ClientStream: stream, cancel: cancel}, nil
	}
}

// cancelOnEnd releases a stream's deadline timer once the stream ends. (If nobody reads to the
// end, the HTTP request's context, the parent, releases it when the request finishes.)
type cancelOnEnd struct {
	grpc.ClientStream
	cancel context.CancelFunc
}

func (s *cancelOnEnd) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.cancel()
	}
	return err
}

// backendServing asks the services' grpc.health.v1 service for the server's overall status.
func backendServing(ctx context.Context, health healthpb.HealthClient) (healthpb.HealthCheckResponse_ServingStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, err
	}
	return resp.GetStatus(), nil
}
