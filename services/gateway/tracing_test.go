package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

// endedSpans hands every span to the test as it ends (so a test waits on a channel, not a clock).
type endedSpans chan sdktrace.ReadOnlySpan

func (e endedSpans) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (e endedSpans) OnEnd(s sdktrace.ReadOnlySpan)                   { e <- s }
func (e endedSpans) Shutdown(context.Context) error                  { return nil }
func (e endedSpans) ForceFlush(context.Context) error                { return nil }

// next is the next span to end, by kind.
func (e endedSpans) next(t *testing.T, kind trace.SpanKind) sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-e:
			if s.SpanKind() == kind {
				return s
			}
		case <-deadline:
			t.Fatalf("no %s span ended", kind)
		}
	}
}

func startTracedGateway(t *testing.T, b *backend) (string, endedSpans) {
	t.Helper()
	spans := make(endedSpans, 16)
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	tr := newTracing(provider)
	cfg := testConfig(b.address)
	conn, err := dialBackend(cfg, tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	handler, err := newHandler(context.Background(), cfg, conn, llmopsv1.NewInferenceServiceClient(conn), tr, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)
	return server.URL, spans
}

func attributesOf(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	out := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		out[kv.Key] = kv.Value
	}
	return out
}

func TestRequestsHaveAServerSpanAndCallsAClientSpanInTheCallersTrace(t *testing.T) {
	b := startBackend(t)
	url, spans := startTracedGateway(t, b)
	const traceID, parentID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	resp, body := do(t, "GET", url+"/v1/promptTemplates/summarization", "", map[string]string{
		"Traceparent": fmt.Sprintf("00-%s-%s-01", traceID, parentID),
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	client := spans.next(t, trace.SpanKindClient)
	server := spans.next(t, trace.SpanKindServer)

	if got := server.SpanContext().TraceID().String(); got != traceID {
		t.Errorf("server span trace id %s, want the caller's %s", got, traceID)
	}
	if got := server.Parent().SpanID().String(); got != parentID || !server.Parent().IsRemote() {
		t.Errorf("server span parent %s, want the caller's span %s", got, parentID)
	}
	if got, want := server.Name(), "GET /v1/promptTemplates/{template_id}"; got != want {
		t.Errorf("server span name %q, want %q", got, want)
	}
	attrs := attributesOf(server)
	for key, want := range map[attribute.Key]attribute.Value{
		"http.request.method":       attribute.StringValue("GET"),
		"url.path":                  attribute.StringValue("/v1/promptTemplates/summarization"),
		"http.route":                attribute.StringValue("/v1/promptTemplates/{template_id}"),
		"http.response.status_code": attribute.IntValue(200),
	} {
		if got := attrs[key]; got != want {
			t.Errorf("server span %s = %v, want %v", key, got.Emit(), want.Emit())
		}
	}

	if client.Parent().SpanID() != server.SpanContext().SpanID() {
		t.Errorf("client span's parent is not the server span")
	}
	if got, want := client.Name(), "llmops.v1.RegistryService/GetPromptTemplate"; got != want {
		t.Errorf("client span name %q, want %q", got, want)
	}
	// The service continues the gateway's client span, not the caller's span.
	want := fmt.Sprintf("00-%s-%s-01", traceID, client.SpanContext().SpanID())
	if got := (<-b.registry.calls).md.Get("traceparent"); len(got) != 1 || got[0] != want {
		t.Errorf("traceparent sent to the service %q, want [%q]", got, want)
	}
}

func TestARequestWithoutTraceparentStartsATraceAndAnUnroutedOneIsNamedByMethod(t *testing.T) {
	b := startBackend(t)
	url, spans := startTracedGateway(t, b)
	if resp, body := do(t, "GET", url+"/v1/promptTemplates/summarization", "", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	client := spans.next(t, trace.SpanKindClient)
	server := spans.next(t, trace.SpanKindServer)
	if server.Parent().IsValid() || client.SpanContext().TraceID() != server.SpanContext().TraceID() {
		t.Errorf("want a new trace rooted at the server span")
	}
	want := fmt.Sprintf("00-%s-%s-01", server.SpanContext().TraceID(), client.SpanContext().SpanID())
	if got := (<-b.registry.calls).md.Get("traceparent"); len(got) != 1 || got[0] != want {
		t.Errorf("traceparent sent to the service %q, want [%q]", got, want)
	}

	if resp, _ := do(t, "GET", url+"/v1/nothing-here", "", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d, want 404", resp.StatusCode)
	}
	unrouted := spans.next(t, trace.SpanKindServer)
	if unrouted.Name() != "GET" {
		t.Errorf("span name %q, want GET", unrouted.Name())
	}
	attrs := attributesOf(unrouted)
	if _, ok := attrs["http.route"]; ok {
		t.Errorf("an unrouted request has http.route %v", attrs["http.route"].Emit())
	}
	if got := attrs["http.response.status_code"]; got != attribute.IntValue(404) {
		t.Errorf("status code attribute %v, want 404", got.Emit())
	}
}

func TestRouteTemplates(t *testing.T) {
	for pattern, want := range map[string]string{
		"/v1/models/{model_id=*}":             "/v1/models/{model_id}",
		"/openai/v1/fine_tuning/jobs/{id=*}":  "/openai/v1/fine_tuning/jobs/{id}",
		"/v1/trainingJobs":                    "/v1/trainingJobs",
		"/v1/{name=projects/*/models/*}:test": "/v1/{name=projects/*/models/*}:test",
	} {
		if got := routeTemplate(pattern); got != want {
			t.Errorf("routeTemplate(%q) = %q, want %q", pattern, got, want)
		}
	}
}

func TestTracingIsConfiguredLikeTheServices(t *testing.T) {
	env := map[string]string{"LLMOPS_OTLP_ENDPOINT": "http://collector:4317", "LLMOPS_SERVICE_NAME": "prod"}
	cfg, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OTLPEndpoint != "http://collector:4317" || cfg.ServiceName != "prod" {
		t.Errorf("%+v", cfg)
	}
	cfg, err = parseConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil || cfg.OTLPEndpoint != "" || cfg.ServiceName != "llmops" {
		t.Errorf("defaults %+v, %v", cfg, err)
	}
}

func TestTracingIsOffWithoutAnEndpoint(t *testing.T) {
	tr, stop, err := startTracing(context.Background(), Config{ServiceName: "llmops"})
	if err != nil || tr != nil {
		t.Fatalf("startTracing without an endpoint = %v, %v; want nil, nil", tr, err)
	}
	if err := stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if tr.dialOptions() != nil || tr.muxOptions() != nil {
		t.Error("tracing off still instruments")
	}
	handler := http.NewServeMux()
	if tr.wrap(handler) != http.Handler(handler) {
		t.Error("tracing off still wraps the handler")
	}
}
