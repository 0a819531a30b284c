package main

// Prometheus metrics of the gateway's own HTTP hop, served on a port of their own
// (-metrics-listen) so that the public port, behind the Ingress, does not expose them.

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// unmatchedRoute labels requests no route matched (404, 405), so that a scan of random paths
// cannot grow the label set.
const unmatchedRoute = "unmatched"

// httpMetrics are the gateway's request metrics, in a registry of their own.
type httpMetrics struct {
	registry *prometheus.Registry
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

func newHTTPMetrics() *httpMetrics {
	m := &httpMetrics{
		registry: prometheus.NewRegistry(),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "llmops_gateway_http_request_duration_seconds",
			Help: "Time from a request's arrival at the gateway to the end of its answer (streams included), by method, route template and status code.",
			// From a cached read to an hour-long stream.
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
		}, []string{"method", "route", "code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmops_gateway_http_requests_in_flight",
			Help: "Requests the gateway is answering now (open streams included).",
		}),
	}
	m.registry.MustRegister(m.duration, m.inFlight,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves the registry in Prometheus' text format.
func (m *httpMetrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	return mux
}

// routeKey holds a *string the mux fills with the matched route template.
type routeKey struct{}

// measure observes every request's duration under the route the mux matched (noteRoute).
func (m *httpMetrics) measure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inFlight.Inc()
		defer m.inFlight.Dec()
		route := unmatchedRoute
		recorder := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(recorder, r.WithContext(context.WithValue(r.Context(), routeKey{}, &route)))
		code := recorder.status
		if code == 0 {
			code = http.StatusOK
		}
		m.duration.WithLabelValues(r.Method, route, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
	})
}

// noteRoute is the mux middleware that tells measure which route matched.
func noteRoute(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if pattern, ok := runtime.HTTPPattern(r.Context()); ok {
			if route, ok := r.Context().Value(routeKey{}).(*string); ok {
				*route = routeTemplate(pattern.String())
			}
		}
		next(w, r, params)
	}
}

// muxOptions add noteRoute; nil metrics (no -metrics-listen) add nothing.
func (m *httpMetrics) muxOptions() []runtime.ServeMuxOption {
	if m == nil {
		return nil
	}
	return []runtime.ServeMuxOption{runtime.WithMiddlewares(noteRoute)}
}

// wrap measures every request; nil metrics wrap nothing.
func (m *httpMetrics) wrap(next http.Handler) http.Handler {
	if m == nil {
		return next
	}
	return m.measure(next)
}
