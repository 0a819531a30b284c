package main

// routedInference is an InferenceServiceClient over several Inference replicas, one gRPC
// connection each. The REST routes (/v1/generate, /v1/generate:stream) and the OpenAI routes
// both call it, so both are routed alike. It chooses per call, after the request is decoded:
// the model reference is a field of the request, which a grpc-go balancer (it sees only the
// method and metadata) could not read without the gateway copying it into metadata first.

import (
	"context"
	"errors"
	"io"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

type routedInference struct {
	state   *routeState
	clients []llmopsv1.InferenceServiceClient
}

func newRoutedInference(state *routeState, conns []*grpc.ClientConn) *routedInference {
	r := &routedInference{state: state}
	for _, conn := range conns {
		r.clients = append(r.clients, llmopsv1.NewInferenceServiceClient(conn))
	}
	return r
}

func isUnavailable(err error) bool {
	return status.Code(err) == codes.Unavailable
}

// Generate sends the request to the chosen replica. A replica that answers UNAVAILABLE (down,
// or draining on shutdown) is marked unhealthy and the request is tried once more on the next
// choice: generation has no side effects, and the replica did not run it.
func (r *routedInference) Generate(ctx context.Context, in *llmopsv1.GenerateRequest, opts ...grpc.CallOption) (*llmopsv1.GenerateResponse, error) {
	resp, err := r.generateOnce(ctx, in, opts)
	if isUnavailable(err) && ctx.Err() == nil && r.state.healthyCount() > 0 {
		resp, err = r.generateOnce(ctx, in, opts)
	}
	return resp, err
}

func (r *routedInference) generateOnce(ctx context.Context, in *llmopsv1.GenerateRequest, opts []grpc.CallOption) (*llmopsv1.GenerateResponse, error) {
	i := r.state.acquire(in.GetModel())
	resp, err := r.clients[i].Generate(ctx, in, opts...)
	r.state.release(i, isUnavailable(err))
	if err == nil {
		r.state.learn(in.GetModel(), resp.GetModel())
	}
	return resp, err
}

// StreamGenerate opens the stream on the chosen replica; the request counts in flight there
// until the stream ends (its last message, an error, or the caller going away).
func (r *routedInference) StreamGenerate(ctx context.Context, in *llmopsv1.StreamGenerateRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[llmopsv1.StreamGenerateResponse], error) {
	ref := in.GetRequest().GetModel()
	i := r.state.acquire(ref)
	ctx, cancel := context.WithCancel(ctx)
	stream, err := r.clients[i].StreamGenerate(ctx, in, opts...)
	if err != nil {
		cancel()
		r.state.release(i, isUnavailable(err))
		return nil, err
	}
	s := &routedStream{ServerStreamingClient: stream, router: r, replica: i, ref: ref, first: true, cancel: cancel}
	// A caller that stops reading early cancels its context; the count must still come down.
	context.AfterFunc(ctx, func() { s.end(nil) })
	return s, nil
}

// ListServedModels answers for one healthy replica (the first, in -inference-backends order);
// each replica's own view is at its own address.
func (r *routedInference) ListServedModels(ctx context.Context, in *llmopsv1.ListServedModelsRequest, opts ...grpc.CallOption) (*llmopsv1.ListServedModelsResponse, error) {
	return r.clients[r.state.firstHealthy()].ListServedModels(ctx, in, opts...)
}

// routedStream releases its replica once, when the stream ends.
type routedStream struct {
	grpc.ServerStreamingClient[llmopsv1.StreamGenerateResponse]
	router  *routedInference
	replica int
	ref     string
	first   bool
	ended   atomic.Bool
	cancel  context.CancelFunc
}

func (s *routedStream) Recv() (*llmopsv1.StreamGenerateResponse, error) {
	msg, err := s.ServerStreamingClient.Recv()
	if err != nil {
		s.end(err)
		return nil, err
	}
	if s.first {
		s.first = false
		s.router.state.learn(s.ref, msg.GetModel())
	}
	return msg, nil
}

func (s *routedStream) end(err error) {
	if s.ended.Swap(true) {
		return
	}
	s.router.state.release(s.replica, err != nil && !errors.Is(err, io.EOF) && isUnavailable(err))
	s.cancel()
}
