package main

// The router through the gateway's REST routes, against fake Inference replicas that say who
// answered: affinity per model, streams released, and unhealthy replicas skipped and retried.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

// fakeReplica answers with its own name as the text, resolves a model reference `x` to the
// id `id-x`, and lists the ids it has served as loaded adapters.
type fakeReplica struct {
	llmopsv1.UnimplementedInferenceServiceServer
	name        string
	address     string
	health      *health.Server
	mu          sync.Mutex
	loaded      map[string]bool
	unavailable bool
	hang        bool // ListServedModels waits for its caller's deadline
}

func (f *fakeReplica) serve(model string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unavailable {
		return "", status.Error(codes.Unavailable, "draining")
	}
	id := "id-" + strings.TrimPrefix(model, "id-")
	f.loaded[id] = true
	return id, nil
}

func (f *fakeReplica) setUnavailable(unavailable bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unavailable = unavailable
}

func (f *fakeReplica) Generate(_ context.Context, req *llmopsv1.GenerateRequest) (*llmopsv1.GenerateResponse, error) {
	id, err := f.serve(req.GetModel())
	if err != nil {
		return nil, err
	}
	return &llmopsv1.GenerateResponse{Text: f.name, Model: id}, nil
}

func (f *fakeReplica) StreamGenerate(req *llmopsv1.StreamGenerateRequest, stream grpc.ServerStreamingServer[llmopsv1.StreamGenerateResponse]) error {
	id, err := f.serve(req.GetRequest().GetModel())
	if err != nil {
		return err
	}
	if err := stream.Send(&llmopsv1.StreamGenerateResponse{TextDelta: f.name, Model: id}); err != nil {
		return err
	}
	return stream.Send(&llmopsv1.StreamGenerateResponse{FinishReason: llmopsv1.FinishReason_FINISH_REASON_STOP})
}

func (f *fakeReplica) ListServedModels(ctx context.Context, _ *llmopsv1.ListServedModelsRequest) (*llmopsv1.ListServedModelsResponse, error) {
	f.mu.Lock()
	hang := f.hang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unavailable {
		return nil, status.Error(codes.Unavailable, "draining")
	}
	base := &llmopsv1.ServedBase{Model: "base", Engine: "engine-" + f.name}
	for id := range f.loaded {
		base.Adapters = append(base.Adapters, &llmopsv1.ServedAdapter{Model: id})
	}
	return &llmopsv1.ListServedModelsResponse{Models: []*llmopsv1.ServedBase{base}, Engine: "engine-" + f.name}, nil
}

func startReplica(t *testing.T, name string) *fakeReplica {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeReplica{name: name, address: listener.Addr().String(), health: health.NewServer(), loaded: map[string]bool{}}
	server := grpc.NewServer()
	llmopsv1.RegisterInferenceServiceServer(server, f)
	healthpb.RegisterHealthServer(server, f.health)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	return f
}

// routedGateway starts a gateway in front of a backend (for the other services) and replicas.
func routedGateway(t *testing.T, routing string, replicas ...*fakeReplica) string {
	t.Helper()
	cfg := testConfig(startBackend(t).address)
	cfg.InferenceRouting = routing
	for _, r := range replicas {
		cfg.InferenceBackends = append(cfg.InferenceBackends, r.address)
	}
	return startGateway(t, cfg).URL
}

// generate asks for one generation through REST and returns the replica that answered.
func generate(t *testing.T, url, model string) string {
	t.Helper()
	resp, body := do(t, "POST", url+"/v1/generate", `{"model":"`+model+`","prompt":"hi"}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var answer struct{ Text string }
	if err := json.Unmarshal([]byte(body), &answer); err != nil {
		t.Fatal(err)
	}
	return answer.Text
}

// streamGenerate does the same through the NDJSON stream route.
func streamGenerate(t *testing.T, url, model string) string {
	t.Helper()
	resp, body := do(t, "POST", url+"/v1/generate:stream", `{"request":{"model":"`+model+`","prompt":"hi"}}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var first struct {
		Result struct {
			TextDelta string `json:"text_delta"`
		}
	}
	if err := json.Unmarshal([]byte(strings.SplitN(body, "\n", 2)[0]), &first); err != nil {
		t.Fatal(err)
	}
	return first.Result.TextDelta
}

func TestRequestsForOneModelStayOnOneReplica(t *testing.T) {
	a, b := startReplica(t, "a"), startReplica(t, "b")
	url := routedGateway(t, routingAffinity, a, b)
	served := map[string]map[string]bool{}
	for _, model := range []string{"m1", "m2", "m3", "m4", "m5", "m6"} {
		served[model] = map[string]bool{}
		for range 3 {
			served[model][generate(t, url, model)] = true
			served[model][streamGenerate(t, url, model)] = true
		}
		// By id, the model goes where its name went (the router learned the id from answers).
		served[model][generate(t, url, "id-"+model)] = true
	}
	for model, by := range served {
		if len(by) != 1 {
			t.Errorf("%s was served by %v", model, by)
		}
	}
}

func TestRoundRobinSpreadsOneModelOverEveryReplica(t *testing.T) {
	a, b := startReplica(t, "a"), startReplica(t, "b")
	url := routedGateway(t, routingRoundRobin, a, b)
	got := []string{generate(t, url, "m1"), generate(t, url, "m1"), streamGenerate(t, url, "m1"), generate(t, url, "m1")}
	if strings.Join(got, "") != "abab" {
		t.Errorf("round robin went %v", got)
	}
}

func TestAnUnavailableReplicaIsSkippedUntilHealthyAgain(t *testing.T) {
	a, b := startReplica(t, "a"), startReplica(t, "b")
	url := routedGateway(t, routingAffinity, a, b)
	model := modelHashedTo(a, a, b) // by id, so that the key never changes
	if got := generate(t, url, model); got != "a" {
		t.Fatalf("%s, hashed to a, was served by %s", model, got)
	}
	// a answers UNAVAILABLE (the call is retried on b, or a poll saw it first): a is skipped.
	a.setUnavailable(true)
	if got := generate(t, url, model); got != "b" {
		t.Fatalf("served by %s while a was unavailable", got)
	}
	if got := streamGenerate(t, url, model); got != "b" {
		t.Fatalf("served by %s while a was unavailable", got)
	}
	// a answers again but its health check says NOT_SERVING (draining): still skipped.
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	a.setUnavailable(false)
	if got := streamGenerate(t, url, model); got != "b" {
		t.Fatalf("served by %s while a was not serving", got)
	}
	// Healthy again: both list the model now, and at equal load the hash's choice, a, wins.
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	deadline := time.Now().Add(5 * time.Second)
	for generate(t, url, model) != "a" {
		if time.Now().After(deadline) {
			t.Fatal("replica a got no traffic back within 5 s of being healthy")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// modelHashedTo is a model id whose rendezvous hash puts it on want among replicas.
func modelHashedTo(want *fakeReplica, replicas ...*fakeReplica) string {
	var addrs []string
	for _, r := range replicas {
		addrs = append(addrs, r.address)
	}
	cands := healthyCandidates(addrs...)
	for i := 0; ; i++ {
		model := fmt.Sprintf("id-m%d", i)
		if cands[chooseAffinity(cands, model)].addr == want.address {
			return model
		}
	}
}

// routerWithoutPolls is a router over replicas whose health only calls change, for tests that
// must not race a poll.
func routerWithoutPolls(t *testing.T, replicas ...*fakeReplica) (*routeState, *routedInference) {
	t.Helper()
	var addrs []string
	var conns []*grpc.ClientConn
	for _, r := range replicas {
		conn, err := dialAddress(testConfig(""), r.address, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		addrs = append(addrs, r.address)
		conns = append(conns, conn)
	}
	state := newRouteState(addrs, false)
	return state, newRoutedInference(state, conns, slog.New(slog.DiscardHandler))
}

func TestAUnaryCallMeetingUnavailableIsRetriedOnAnotherReplica(t *testing.T) {
	a, b := startReplica(t, "a"), startReplica(t, "b")
	state, router := routerWithoutPolls(t, a, b)
	a.setUnavailable(true)
	b.setUnavailable(true)
	for _, model := range []string{"m1", "m2", "m3", "m4"} {
		_, err := router.Generate(context.Background(), &llmopsv1.GenerateRequest{Model: model})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("%s: %v with every replica unavailable", model, err)
		}
	}
	state.observe(0, time.Now(), true, nil)
	state.observe(1, time.Now(), true, nil)
	b.setUnavailable(false)
	for _, model := range []string{modelHashedTo(a, a, b), modelHashedTo(b, a, b)} {
		resp, err := router.Generate(context.Background(), &llmopsv1.GenerateRequest{Model: model})
		if err != nil || resp.GetText() != "b" {
			t.Fatalf("%s: %v, served by %q", model, err, resp.GetText())
		}
	}
	if state.healthyCount() != 1 {
		t.Errorf("%d healthy replicas; a answered UNAVAILABLE and should be skipped", state.healthyCount())
	}
}

func TestStreamsReleaseTheirReplica(t *testing.T) {
	state, router := routerWithoutPolls(t, startReplica(t, "a"))
	inflight := func() int {
		state.mu.Lock()
		defer state.mu.Unlock()
		return state.replicas[0].inflight
	}
	request := &llmopsv1.StreamGenerateRequest{Request: &llmopsv1.GenerateRequest{Model: "m"}}
	read, err := router.StreamGenerate(context.Background(), request)
	if err != nil {
		t.Fatal(err)
	}
	abandonCtx, abandon := context.WithCancel(context.Background())
	if _, err := router.StreamGenerate(abandonCtx, request); err != nil {
		t.Fatal(err)
	}
	if got := inflight(); got != 2 {
		t.Fatalf("%d in flight with two streams open", got)
	}
	for {
		if _, err := read.Recv(); err != nil {
			break
		}
	}
	if got := inflight(); got != 1 {
		t.Errorf("%d in flight after one stream was read to its end", got)
	}
	abandon() // a caller that leaves without reading
	deadline := time.Now().Add(5 * time.Second)
	for inflight() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the abandoned stream was still counted 5 s after its caller left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// servedBy lists a served-models answer as "replica:adapter,adapter" per base, adapters sorted.
func servedBy(resp *llmopsv1.ListServedModelsResponse) []string {
	var got []string
	for _, base := range resp.GetModels() {
		var adapters []string
		for _, a := range base.GetAdapters() {
			adapters = append(adapters, a.GetModel())
		}
		slices.Sort(adapters)
		got = append(got, base.GetReplica()+":"+strings.Join(adapters, ","))
	}
	return got
}

func TestServedModelsListEveryReplicaInBackendOrder(t *testing.T) {
	a, b, c := startReplica(t, "a"), startReplica(t, "b"), startReplica(t, "c")
	state, router := routerWithoutPolls(t, a, b, c)
	onA, onC := modelHashedTo(a, a, b, c), modelHashedTo(c, a, b, c)
	for _, model := range []string{onC, onA} { // sent out of list order: the list keeps its own
		if _, err := router.Generate(context.Background(), &llmopsv1.GenerateRequest{Model: model}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := router.ListServedModels(context.Background(), &llmopsv1.ListServedModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{a.address + ":" + onA, b.address + ":", c.address + ":" + onC}
	if got := servedBy(resp); !slices.Equal(got, want) {
		t.Errorf("listed %v, want %v", got, want)
	}
	if resp.GetEngine() != "engine-a" || resp.GetModels()[2].GetEngine() != "engine-c" {
		t.Errorf("engine %q, c's base %q", resp.GetEngine(), resp.GetModels()[2].GetEngine())
	}
	// A replica the router holds unhealthy is not asked.
	state.observe(1, time.Now(), false, nil)
	resp, err = router.ListServedModels(context.Background(), &llmopsv1.ListServedModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := servedBy(resp); !slices.Equal(got, []string{want[0], want[2]}) {
		t.Errorf("with b unhealthy listed %v", got)
	}
}

func TestServedModelsLeaveOutAFailingReplicaUnlessNoneAnswers(t *testing.T) {
	a, b := startReplica(t, "a"), startReplica(t, "b")
	state, router := routerWithoutPolls(t, a, b)
	a.setUnavailable(true)
	resp, err := router.ListServedModels(context.Background(), &llmopsv1.ListServedModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := servedBy(resp); !slices.Equal(got, []string{b.address + ":"}) || resp.GetEngine() != "engine-b" {
		t.Errorf("with a unavailable listed %v, engine %q", got, resp.GetEngine())
	}
	if got := state.healthyReplicas(); !slices.Equal(got, []int{1}) {
		t.Errorf("healthy %v after a answered UNAVAILABLE", got)
	}
	// None healthy: every replica is asked, and the first one's error is the answer.
	b.setUnavailable(true)
	if _, err := router.ListServedModels(context.Background(), &llmopsv1.ListServedModelsRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("%v with every replica unavailable", err)
	}
	if len(state.healthyReplicas()) != 0 {
		t.Fatal("a replica that answered UNAVAILABLE is still healthy")
	}
	a.setUnavailable(false)
	resp, err = router.ListServedModels(context.Background(), &llmopsv1.ListServedModelsRequest{})
	if err != nil {
		t.Fatalf("%v with a back and none marked healthy", err)
	}
	if got := servedBy(resp); !slices.Equal(got, []string{a.address + ":"}) {
		t.Errorf("listed %v", got)
	}
}

func TestServedModelsKeepTheCallersDeadline(t *testing.T) {
	a, b := startReplica(t, "a"), startReplica(t, "b")
	_, router := routerWithoutPolls(t, a, b)
	a.mu.Lock()
	a.hang = true
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	started := time.Now()
	resp, err := router.ListServedModels(ctx, &llmopsv1.ListServedModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := servedBy(resp); !slices.Equal(got, []string{b.address + ":"}) {
		t.Errorf("listed %v with a hanging", got)
	}
	if elapsed := time.Since(started); elapsed > 5*time.Second {
		t.Errorf("took %v with a 300 ms deadline", elapsed)
	}
	b.mu.Lock()
	b.hang = true
	b.mu.Unlock()
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := router.ListServedModels(ctx, &llmopsv1.ListServedModelsRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("%v with both hanging", err)
	}
}

func TestServedModelsThroughTheGatewayNameEachReplica(t *testing.T) {
	a, b := startReplica(t, "a"), startReplica(t, "b")
	url := routedGateway(t, routingAffinity, a, b)
	onB := modelHashedTo(b, a, b)
	if got := generate(t, url, onB); got != "b" {
		t.Fatalf("%s, hashed to b, was served by %s", onB, got)
	}
	resp, body := do(t, "GET", url+"/v1/served-models", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var answer struct {
		Models []struct {
			Replica  string
			Adapters []struct{ Model string }
		}
	}
	if err := json.Unmarshal([]byte(body), &answer); err != nil {
		t.Fatal(err)
	}
	if len(answer.Models) != 2 || answer.Models[0].Replica != a.address || answer.Models[1].Replica != b.address ||
		len(answer.Models[1].Adapters) != 1 || answer.Models[1].Adapters[0].Model != onB {
		t.Errorf("listed %s", body)
	}
}
