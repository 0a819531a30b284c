package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

// call is what a fake service saw of one call.
type call struct {
	md       metadata.MD
	deadline time.Time
	hasDL    bool
}

func record(ctx context.Context, calls chan<- call) {
	md, _ := metadata.FromIncomingContext(ctx)
	deadline, ok := ctx.Deadline()
	calls <- call{md: md, deadline: deadline, hasDL: ok}
}

type fakeRegistry struct {
	llmopsv1.UnimplementedRegistryServiceServer
	calls chan call
}

func (f *fakeRegistry) GetPromptTemplate(ctx context.Context, req *llmopsv1.GetPromptTemplateRequest) (*llmopsv1.PromptTemplate, error) {
	record(ctx, f.calls)
	switch req.GetTemplateId() {
	case "missing":
		return nil, status.Error(codes.NotFound, "template missing not found")
	case "newer":
		return nil, status.FromProto(&spb.Status{
			Code:    int32(codes.FailedPrecondition),
			Message: "a detail this gateway does not know",
			Details: []*anypb.Any{{TypeUrl: "type.googleapis.com/llmops.v9.Unknown"}},
		}).Err()
	case "bad":
		st, err := status.New(codes.InvalidArgument, "bad template id").WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "template_id", Description: "not allowed"}},
		})
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	}
	return &llmopsv1.PromptTemplate{TemplateId: req.GetTemplateId(), Version: 1, Template: "Summarize: {text}"}, nil
}

func (f *fakeRegistry) CreatePromptTemplate(ctx context.Context, req *llmopsv1.CreatePromptTemplateRequest) (*llmopsv1.PromptTemplate, error) {
	record(ctx, f.calls)
	created := req.GetPromptTemplate()
	return &llmopsv1.PromptTemplate{TemplateId: created.GetTemplateId(), Version: 1, Template: created.GetTemplate()}, nil
}

type fakeTraining struct {
	llmopsv1.UnimplementedTrainingServiceServer
	calls   chan call
	release chan struct{} // the watch sends its second event once this is closed
}

func (f *fakeTraining) WatchTrainingJob(req *llmopsv1.WatchTrainingJobRequest, stream grpc.ServerStreamingServer[llmopsv1.JobEvent]) error {
	record(stream.Context(), f.calls)
	if err := stream.Send(&llmopsv1.JobEvent{Sequence: 1, Message: "queued"}); err != nil {
		return err
	}
	select {
	case <-f.release:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	return stream.Send(&llmopsv1.JobEvent{Sequence: 2, Message: "done"})
}

type backend struct {
	address  string
	registry *fakeRegistry
	training *fakeTraining
	health   *health.Server
	server   *grpc.Server
}

// startBackend serves the fake services and the standard health service; opts configure the
// gRPC server (grpc.Creds for TLS).
func startBackend(t *testing.T, opts ...grpc.ServerOption) *backend {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{
		address:  listener.Addr().String(),
		registry: &fakeRegistry{calls: make(chan call, 16)},
		training: &fakeTraining{calls: make(chan call, 16), release: make(chan struct{})},
		health:   health.NewServer(),
		server:   grpc.NewServer(opts...),
	}
	llmopsv1.RegisterRegistryServiceServer(b.server, b.registry)
	llmopsv1.RegisterTrainingServiceServer(b.server, b.training)
	healthpb.RegisterHealthServer(b.server, b.health)
	go func() { _ = b.server.Serve(listener) }()
	t.Cleanup(b.server.Stop)
	return b
}

func testConfig(backendAddress string) Config {
	return Config{
		Listen:        "127.0.0.1:0",
		Backend:       backendAddress,
		MaxBodyBytes:  1024,
		Timeout:       7 * time.Second,
		StreamTimeout: 3 * time.Minute,
		ShutdownGrace: time.Second,
	}
}

func startGateway(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	conn, err := dialBackend(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	logger := slog.New(slog.DiscardHandler)
	inference, closeInference, err := inferenceClient(t.Context(), cfg, conn, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeInference)
	handler, err := newHandler(context.Background(), cfg, conn, inference, nil, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)
	return server
}

func do(t *testing.T, method, url, body string, headers map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(data)
}

// rpcStatus is the JSON google.rpc.Status the gateway answers errors with.
type rpcStatus struct {
	Code    int              `json:"code"`
	Message string           `json:"message"`
	Details []map[string]any `json:"details"`
}

func decodeStatus(t *testing.T, body string) rpcStatus {
	t.Helper()
	var st rpcStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("not a JSON status: %v: %s", err, body)
	}
	return st
}

func TestOnlyAllowedHeadersReachTheServices(t *testing.T) {
	b := startBackend(t)
	gw := startGateway(t, testConfig(b.address))
	resp, body := do(t, "GET", gw.URL+"/v1/promptTemplates/summarization", "", map[string]string{
		"Authorization":     "Bearer k1",
		"X-Request-Id":      "req-1",
		"Traceparent":       "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"Tracestate":        "vendor=1",
		"Grpc-Metadata-Foo": "bar",
		"X-Evil":            "1",
		"Cookie":            "session=1",
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	md := (<-b.registry.calls).md
	for key, want := range map[string]string{
		"authorization": "Bearer k1",
		"x-request-id":  "req-1",
		"traceparent":   "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"tracestate":    "vendor=1",
	} {
		if got := md.Get(key); len(got) != 1 || got[0] != want {
			t.Errorf("metadata %s = %q, want [%q]", key, got, want)
		}
	}
	for _, key := range []string{"foo", "grpc-metadata-foo", "x-evil", "cookie"} {
		if got := md.Get(key); len(got) != 0 {
			t.Errorf("metadata %s = %q, want it dropped", key, got)
		}
	}
	if got := resp.Header.Get("X-Request-Id"); got != "req-1" {
		t.Errorf("response X-Request-Id = %q, want req-1", got)
	}
	for name := range resp.Header {
		if strings.HasPrefix(name, "Grpc-") {
			t.Errorf("response header %s passed through", name)
		}
	}
}

func TestRequestIDIsMadeWhenMissingOrInvalid(t *testing.T) {
	b := startBackend(t)
	gw := startGateway(t, testConfig(b.address))
	for _, given := range []string{"", "has space", strings.Repeat("x", 129)} {
		resp, _ := do(t, "GET", gw.URL+"/v1/promptTemplates/summarization", "", map[string]string{"X-Request-Id": given})
		sent := (<-b.registry.calls).md.Get("x-request-id")
		returned := resp.Header.Get("X-Request-Id")
		if len(sent) != 1 || sent[0] != returned || !requestIDPattern.MatchString(returned) || returned == given {
			t.Errorf("given %q: sent %q, returned %q", given, sent, returned)
		}
	}
}

func TestErrorsAreStatusJSONWithDetails(t *testing.T) {
	b := startBackend(t)
	gw := startGateway(t, testConfig(b.address))

	resp, body := do(t, "GET", gw.URL+"/v1/promptTemplates/missing", "", nil)
	if st := decodeStatus(t, body); resp.StatusCode != http.StatusNotFound || st.Code != int(codes.NotFound) {
		t.Errorf("missing: %d %s", resp.StatusCode, body)
	}

	resp, body = do(t, "GET", gw.URL+"/v1/promptTemplates/bad", "", nil)
	st := decodeStatus(t, body)
	if resp.StatusCode != http.StatusBadRequest || st.Code != int(codes.InvalidArgument) || len(st.Details) != 1 {
		t.Fatalf("bad: %d %s", resp.StatusCode, body)
	}
	violations, _ := st.Details[0]["field_violations"].([]any)
	if st.Details[0]["@type"] != "type.googleapis.com/google.rpc.BadRequest" || len(violations) != 1 {
		t.Errorf("details: %s", body)
	}

	resp, body = do(t, "GET", gw.URL+"/v1/promptTemplates/newer", "", nil)
	if st := decodeStatus(t, body); resp.StatusCode != http.StatusBadRequest || st.Code != int(codes.FailedPrecondition) || len(st.Details) != 0 {
		t.Errorf("unknown detail type: %d %s", resp.StatusCode, body)
	}

	resp, body = do(t, "POST", gw.URL+"/v1/promptTemplates", `{"prompt_template": {"template_id": "t"}, "no_such_field": 1}`, nil)
	if st := decodeStatus(t, body); resp.StatusCode != http.StatusBadRequest || st.Code != int(codes.InvalidArgument) {
		t.Errorf("unknown field: %d %s", resp.StatusCode, body)
	}
}

func TestResponsesUseProtoFieldNames(t *testing.T) {
	b := startBackend(t)
	gw := startGateway(t, testConfig(b.address))
	resp, body := do(t, "POST", gw.URL+"/v1/promptTemplates", `{"prompt_template": {"template_id": "t", "template": "Hi {text}"}}`, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"template_id":"t"`) {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
}

func TestBodiesOverTheLimitAnswer413(t *testing.T) {
	b := startBackend(t)
	gw := startGateway(t, testConfig(b.address)) // 1024 bytes
	big := `{"prompt_template": {"template_id": "t", "template": "` + strings.Repeat("x", 2000) + `"}}`

	resp, body := do(t, "POST", gw.URL+"/v1/promptTemplates", big, nil)
	if st := decodeStatus(t, body); resp.StatusCode != http.StatusRequestEntityTooLarge || st.Code != int(codes.InvalidArgument) {
		t.Errorf("with Content-Length: %d %s", resp.StatusCode, body)
	}

	// Chunked, so only reading finds out.
	req, err := http.NewRequest("POST", gw.URL+"/v1/promptTemplates", io.MultiReader(strings.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || decodeStatus(t, string(data)).Code != int(codes.InvalidArgument) {
		t.Errorf("chunked: %d %s", resp.StatusCode, data)
	}

	resp, body = do(t, "POST", gw.URL+"/v1/promptTemplates", `{"prompt_template": {"template_id": "t"}}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("small body: %d %s", resp.StatusCode, body)
	}
}

func TestWrongMethodAnswers405AndUnknownPath404(t *testing.T) {
	b := startBackend(t)
	gw := startGateway(t, testConfig(b.address))
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"DELETE", "/v1/promptTemplates", http.StatusMethodNotAllowed},
		{"POST", "/healthz", http.StatusMethodNotAllowed},
		{"GET", "/v1/generate", http.StatusMethodNotAllowed},
		{"GET", "/v1/nothing-here", http.StatusNotFound},
	} {
		resp, body := do(t, c.method, gw.URL+c.path, "", nil)
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d, want %d: %s", c.method, c.path, resp.StatusCode, c.want, body)
		}
		decodeStatus(t, body)
	}
}

func TestDeadlines(t *testing.T) {
	b := startBackend(t)
	cfg := testConfig(b.address)
	gw := startGateway(t, cfg)

	within := func(name string, c call, want time.Duration) {
		t.Helper()
		if !c.hasDL {
			t.Errorf("%s: no deadline", name)
			return
		}
		if left := time.Until(c.deadline); left > want || left < want-5*time.Second {
			t.Errorf("%s: %v left, want about %v", name, left, want)
		}
	}
	do(t, "GET", gw.URL+"/v1/promptTemplates/t", "", nil)
	within("unary default", <-b.registry.calls, cfg.Timeout)

	do(t, "GET", gw.URL+"/v1/promptTemplates/t", "", map[string]string{"Grpc-Timeout": "20S"})
	within("unary with Grpc-Timeout", <-b.registry.calls, 20*time.Second)

	close(b.training.release)
	do(t, "GET", gw.URL+"/v1/trainingJobs/j1:watch", "", nil)
	within("server stream default", <-b.training.calls, cfg.StreamTimeout)
}

func TestServerStreamsAreNDJSONFlushedPerMessage(t *testing.T) {
	b := startBackend(t)
	gw := startGateway(t, testConfig(b.address))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", gw.URL+"/v1/trainingJobs/j1:watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	// The first event must arrive while the service still holds back the second.
	first, err := lines.ReadString('\n')
	if err != nil {
		t.Fatalf("first line: %v", err)
	}
	close(b.training.release)
	second, err := lines.ReadString('\n')
	if err != nil {
		t.Fatalf("second line: %v", err)
	}
	for i, line := range []string{first, second} {
		var msg struct {
			Result struct {
				Sequence string `json:"sequence"` // int64 is a string in proto3 JSON
				Message  string `json:"message"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(line), &msg); err != nil || msg.Result.Sequence != []string{"1", "2"}[i] {
			t.Errorf("line %d: %q (%v)", i+1, line, err)
		}
	}
	if rest, _ := io.ReadAll(lines); len(rest) != 0 {
		t.Errorf("after the stream: %q", rest)
	}
}

func TestReadyzFollowsTheBackendHealth(t *testing.T) {
	b := startBackend(t)
	gw := startGateway(t, testConfig(b.address))
	status := func() int {
		resp, _ := do(t, "GET", gw.URL+"/readyz", "", nil)
		return resp.StatusCode
	}
	if got := status(); got != http.StatusOK {
		t.Errorf("serving: %d", got)
	}
	b.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if got := status(); got != http.StatusServiceUnavailable {
		t.Errorf("not serving: %d", got)
	}
	b.server.Stop()
	if got := status(); got != http.StatusServiceUnavailable {
		t.Errorf("stopped: %d", got)
	}
	if resp, _ := do(t, "GET", gw.URL+"/healthz", "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
}

func TestOpenAPIDocumentIsServed(t *testing.T) {
	gw := startGateway(t, testConfig("127.0.0.1:1"))
	resp, body := do(t, "GET", gw.URL+"/openapi.json", "", nil)
	var doc struct {
		Swagger string         `json:"swagger"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %v", resp.StatusCode, err)
	}
	if doc.Swagger != "2.0" || doc.Paths["/v1/generate"] == nil || doc.Paths["/v1/trainingJobs/{id}:watch"] == nil {
		t.Errorf("swagger %q, %d paths", doc.Swagger, len(doc.Paths))
	}
}

func TestConfigFromFlagsAndEnvironment(t *testing.T) {
	env := map[string]string{"LLMOPS_GATEWAY_BACKEND": "b:1", "LLMOPS_GATEWAY_TIMEOUT": "5s", "LLMOPS_GATEWAY_LISTEN": "x:2"}
	cfg, err := parseConfig([]string{"-listen", "127.0.0.1:0"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Backend != "b:1" || cfg.Timeout != 5*time.Second || cfg.Listen != "127.0.0.1:0" || cfg.MaxBodyBytes != 64<<20 || cfg.StreamTimeout != time.Hour {
		t.Errorf("%+v", cfg)
	}
	if _, err := parseConfig(nil, func(k string) string { return map[string]string{"LLMOPS_GATEWAY_TIMEOUT": "soon"}[k] }, io.Discard); err == nil {
		t.Error("a bad duration in the environment was accepted")
	}
	if _, err := parseConfig([]string{"-max-body-bytes", "0"}, func(string) string { return "" }, io.Discard); err == nil {
		t.Error("a zero body limit was accepted")
	}
}

func TestRunPrintsItsAddressAndStopsWhenCancelled(t *testing.T) {
	b := startBackend(t)
	ctx, cancel := context.WithCancel(context.Background())
	reader, writer := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(ctx, testConfig(b.address), slog.New(slog.DiscardHandler), writer) }()
	line, err := bufio.NewReader(reader).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(line)
	if len(fields) < 4 || !strings.HasPrefix(fields[3], "http://127.0.0.1:") {
		t.Fatalf("address line %q", line)
	}
	if resp, _ := do(t, "GET", fields[3]+"/healthz", "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not stop")
	}
}
