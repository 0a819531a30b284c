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
	"log/slog"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

type routedInference struct {
	state   *routeState
	clients []llmopsv1.InferenceServiceClient
	logger  *slog.Logger
}

func newRoutedInference(state *routeState, conns []*grpc.ClientConn, logger *slog.Logger) *routedInference {
	r := &routedInference{state: state, logger: logger}
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

// ListServedModels asks every healthy replica at once (every replica, when none is) within the
// caller's deadline and lists all their bases in -inference-backends order, each with `replica`
// set to its backend address: the same base loaded on two replicas is listed twice, since each
// copy has its own adapters and queue. A replica that fails is left out with a warning in the
// log as long as another answered (one replica down must not hide what the others hold); when
// none answered, the first one's error is returned. The response's `engine` is the first
// answering replica's. The router's own poll (route_poll.go) calls each replica directly, not
// through here.
func (r *routedInference) ListServedModels(ctx context.Context, in *llmopsv1.ListServedModelsRequest, opts ...grpc.CallOption) (*llmopsv1.ListServedModelsResponse, error) {
	asked := r.state.healthyReplicas()
	if len(asked) == 0 {
		asked = make([]int, len(r.clients))
		for i := range asked {
			asked[i] = i
		}
	}
	answers := make([]*llmopsv1.ListServedModelsResponse, len(asked))
	errs := make([]error, len(asked))
	var wg sync.WaitGroup
	for k, i := range asked {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[k], errs[k] = r.clients[i].ListServedModels(ctx, in, opts...)
		}()
	}
	wg.Wait()
	merged := &llmopsv1.ListServedModelsResponse{}
	answered := false
	for k, i := range asked {
		addr := r.state.addr(i)
		if errs[k] != nil {
			if isUnavailable(errs[k]) {
				r.state.markUnavailable(i)
			}
			continue
		}
		if !answered {
			answered = true
			merged.Engine = answers[k].GetEngine()
		}
		for _, base := range answers[k].GetModels() {
			base.Replica = addr
			merged.Models = append(merged.Models, base)
		}
	}
	if !answered {
		return nil, errs[0]
	}
	for k, i := range asked {
		if errs[k] != nil {
			r.logger.Warn("inference replica left out of the served models", "backend", r.state.addr(i), "error", errs[k])
		}
	}
	return merged, nil
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
