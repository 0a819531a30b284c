package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

func TestRequestDurationsByRouteTemplateAndCode(t *testing.T) {
	b := startBackend(t)
	cfg := testConfig(b.address)
	conn, err := dialBackend(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	metrics := newHTTPMetrics()
	handler, err := newHandler(context.Background(), cfg, conn, llmopsv1.NewInferenceServiceClient(conn), nil, metrics, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// Served in this goroutine: each request is observed once ServeHTTP returns.
	for _, path := range []string{"/v1/promptTemplates/a", "/v1/promptTemplates/b", "/v1/promptTemplates/missing", "/v1/no/such/path"} {
		handler.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}

	scrape := httptest.NewRecorder()
	metrics.handler().ServeHTTP(scrape, httptest.NewRequest("GET", "/metrics", nil))
	if scrape.Code != http.StatusOK {
		t.Fatalf("/metrics answered %d", scrape.Code)
	}
	body, _ := io.ReadAll(scrape.Body)
	for _, want := range []string{
		`llmops_gateway_http_request_duration_seconds_count{code="200",method="GET",route="/v1/promptTemplates/{template_id}"} 2`,
		`llmops_gateway_http_request_duration_seconds_count{code="404",method="GET",route="/v1/promptTemplates/{template_id}"} 1`,
		`llmops_gateway_http_request_duration_seconds_count{code="404",method="GET",route="unmatched"} 1`,
		`llmops_gateway_http_requests_in_flight 0`,
		`process_cpu_seconds_total`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(body), "/v1/no/such/path") {
		t.Error("an unmatched path became a label value")
	}
}

func TestNoMetricsWithoutAListener(t *testing.T) {
	var off *httpMetrics
	handler := http.NewServeMux()
	if off.wrap(handler) != http.Handler(handler) || off.muxOptions() != nil {
		t.Error("metrics off still wrap")
	}
	cfg, err := parseConfig(nil, func(k string) string { return map[string]string{"LLMOPS_GATEWAY_METRICS_LISTEN": "127.0.0.1:0"}[k] }, io.Discard)
	if err != nil || cfg.MetricsListen != "127.0.0.1:0" {
		t.Errorf("%+v, %v", cfg, err)
	}
}
