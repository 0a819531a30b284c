package main

// OpenTelemetry tracing of the gateway, on only when an OTLP endpoint is set (the
// LLMOPS_OTLP_ENDPOINT the Python services and workers read): a server span per HTTP request, a
// client span per gRPC call to the services, and the W3C trace context of that client span sent
// as the call's traceparent, so the services' spans are its children. Off, nothing is wrapped:
// no spans, no exporter, and the caller's traceparent is forwarded as it came.

import (
	"context"
	"net/http"
	"regexp"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// tracing is what the HTTP handler and the backend connection are instrumented with; a nil
// *tracing is tracing off.
type tracing struct {
	provider   trace.TracerProvider
	propagator propagation.TextMapPropagator
}

// startTracing exports spans over OTLP/gRPC to cfg.OTLPEndpoint with service.name
// "<cfg.ServiceName>-gateway" (as workers are "<name>-worker"). Without an endpoint it returns a
// nil *tracing. The returned function flushes and stops the exporter.
func startTracing(ctx context.Context, cfg Config) (*tracing, func(context.Context) error, error) {
	if cfg.OTLPEndpoint == "" {
		return nil, func(context.Context) error { return nil }, nil
	}
	exporter, err := otlptracegrpc.New(ctx, otlpEndpointOption(cfg.OTLPEndpoint))
	if err != nil {
		return nil, nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(cfg.ServiceName+"-gateway"),
	))
	if err != nil {
		return nil, nil, err
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	return newTracing(provider), provider.Shutdown, nil
}

// newTracing traces with provider and propagates W3C trace context (traceparent, tracestate).
func newTracing(provider trace.TracerProvider) *tracing {
	return &tracing{provider: provider, propagator: propagation.TraceContext{}}
}

// otlpEndpointOption reads the endpoint as the Python exporter does: a URL (http:// is
// plaintext, https:// TLS), or host:port (TLS unless OTEL_EXPORTER_OTLP_INSECURE says otherwise).
func otlpEndpointOption(endpoint string) otlptracegrpc.Option {
	if strings.Contains(endpoint, "://") {
		return otlptracegrpc.WithEndpointURL(endpoint)
	}
	return otlptracegrpc.WithEndpoint(endpoint)
}

// dialOptions add a client span per gRPC call and inject its traceparent into the call's
// metadata, replacing the caller's (which is the server span's parent).
func (t *tracing) dialOptions() []grpc.DialOption {
	if t == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(t.provider),
		otelgrpc.WithPropagators(t.propagator),
	))}
}

// muxOptions name each routed request's server span after its route template.
func (t *tracing) muxOptions() []runtime.ServeMuxOption {
	if t == nil {
		return nil
	}
	return []runtime.ServeMuxOption{runtime.WithMiddlewares(routeSpan)}
}

// wrap starts the server span of every request, continuing the caller's traceparent. The span
// carries OpenTelemetry's HTTP server conventions (http.request.method, url.path,
// http.response.status_code, ...; http.route from routeSpan) and is named "METHOD route", or
// "METHOD" for a request no route matched.
func (t *tracing) wrap(next http.Handler) http.Handler {
	if t == nil {
		return next
	}
	return otelhttp.NewHandler(next, "gateway",
		otelhttp.WithTracerProvider(t.provider),
		otelhttp.WithPropagators(t.propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
	)
}

// routeSpan sets http.route (the path template, "/v1/models/{model_id}") on the request's server
// span once grpc-gateway has matched the route, and renames the span after it.
func routeSpan(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if pattern, ok := runtime.HTTPPattern(r.Context()); ok {
			span := trace.SpanFromContext(r.Context())
			route := routeTemplate(pattern.String())
			span.SetAttributes(attribute.String("http.route", route))
			span.SetName(r.Method + " " + route)
		}
		next(w, r, params)
	}
}

// captureAny matches grpc-gateway's rendering of a one-segment variable, "{name=*}".
var captureAny = regexp.MustCompile(`\{([^{}=]+)=\*\}`)

// routeTemplate writes a grpc-gateway pattern as the route template of the HTTP conventions:
// "{model_id=*}" becomes "{model_id}"; multi-segment captures ("{name=**}") stay as they are.
func routeTemplate(pattern string) string {
	return captureAny.ReplaceAllString(pattern, "{$1}")
}
