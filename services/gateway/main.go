// Command llmops-gateway serves the llmops.v1 gRPC services as REST/JSON (grpc-gateway v2) on one
// HTTP port, proxying every call to one gRPC backend.
//
// Flags take their defaults from LLMOPS_GATEWAY_* environment variables; see -help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Config is what the gateway is started with.
type Config struct {
	Listen        string        // HTTP address to listen on
	Backend       string        // gRPC address of the services
	MaxBodyBytes  int64         // largest request body accepted
	Timeout       time.Duration // deadline of unary and client-streaming calls that set none
	StreamTimeout time.Duration // deadline of server-streaming calls that set none; 0: none
	ShutdownGrace time.Duration // how long in-flight requests may finish after SIGTERM

	TLSCert string // PEM certificate (chain) to serve HTTPS with; empty: plain HTTP
	TLSKey  string // its PEM private key

	BackendTLS        bool   // TLS to the backend, verified against the system roots
	BackendCA         string // PEM CA file to verify the backend with (implies TLS)
	BackendCert       string // PEM client certificate for mutual TLS (implies TLS)
	BackendKey        string // its PEM private key
	BackendServerName string // name checked in the backend's certificate, if not the address's host

	MetricsListen string // address serving Prometheus /metrics; empty: none

	OTLPEndpoint string // OTLP/gRPC endpoint spans are exported to; empty: no tracing
	ServiceName  string // service.name of the spans is this plus "-gateway"

	InferenceBackends []string // gRPC addresses of Inference replicas; empty: Inference on Backend
	InferenceRouting  string   // how requests are spread over them: affinity or round-robin
}

// envNames maps each flag to the environment variable that gives its default.
var envNames = map[string]string{
	"listen":         "LLMOPS_GATEWAY_LISTEN",
	"backend":        "LLMOPS_GATEWAY_BACKEND",
	"max-body-bytes": "LLMOPS_GATEWAY_MAX_BODY_BYTES",
	"timeout":        "LLMOPS_GATEWAY_TIMEOUT",
	"stream-timeout": "LLMOPS_GATEWAY_STREAM_TIMEOUT",
	"shutdown-grace": "LLMOPS_GATEWAY_SHUTDOWN_GRACE",
	"tls-cert":       "LLMOPS_GATEWAY_TLS_CERT_FILE",
	"tls-key":        "LLMOPS_GATEWAY_TLS_KEY_FILE",
	// The backend's TLS settings are the ones every client of the services reads (the Python SDK
	// and CLI too), so one environment configures them all.
	"backend-tls":         "LLMOPS_TLS",
	"backend-ca":          "LLMOPS_TLS_CA_FILE",
	"backend-cert":        "LLMOPS_TLS_CERT_FILE",
	"backend-key":         "LLMOPS_TLS_KEY_FILE",
	"backend-server-name": "LLMOPS_TLS_SERVER_NAME",
	"metrics-listen":      "LLMOPS_GATEWAY_METRICS_LISTEN",
	"inference-backends":  "LLMOPS_GATEWAY_INFERENCE_BACKENDS",
	"inference-routing":   "LLMOPS_GATEWAY_INFERENCE_ROUTING",
	// Tracing is configured like the services' and workers' (llmops_services/settings.py).
	"otlp-endpoint": "LLMOPS_OTLP_ENDPOINT",
	"service-name":  "LLMOPS_SERVICE_NAME",
}

// parseConfig reads flags, then the environment for every flag not given.
func parseConfig(args []string, getenv func(string) string, output io.Writer) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("llmops-gateway", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&cfg.Listen, "listen", "localhost:8000", "HTTP `address` to listen on (port 0 picks a free one)")
	fs.StringVar(&cfg.Backend, "backend", "localhost:50051", "gRPC `address` of the llmops services")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", 64<<20, "largest request body accepted, in `bytes` (413 above)")
	fs.DurationVar(&cfg.Timeout, "timeout", 60*time.Second, "deadline of unary calls that send no Grpc-Timeout header")
	fs.DurationVar(&cfg.StreamTimeout, "stream-timeout", time.Hour, "deadline of server-streaming calls that send no Grpc-Timeout header (0: none)")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", 10*time.Second, "how long in-flight requests may finish after SIGTERM or SIGINT")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate `file` (chain) to serve HTTPS with; needs -tls-key (default: plain HTTP)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key `file` of -tls-cert")
	fs.Var((*boolValue)(&cfg.BackendTLS), "backend-tls", "use TLS to the backend, verifying it against the system roots (1/0, true/false, yes/no, on/off)")
	fs.StringVar(&cfg.BackendCA, "backend-ca", "", "PEM `file` of the CA(s) to verify the backend with instead of the system roots (implies TLS)")
	fs.StringVar(&cfg.BackendCert, "backend-cert", "", "PEM client certificate `file` for mutual TLS with the backend; needs -backend-key (implies TLS)")
	fs.StringVar(&cfg.BackendKey, "backend-key", "", "PEM private key `file` of -backend-cert")
	fs.StringVar(&cfg.BackendServerName, "backend-server-name", "", "`name` to check in the backend's certificate (default: the host of -backend)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "`address` to serve Prometheus metrics on, at /metrics (port 0 picks a free one); empty: none")
	fs.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", "", "OTLP/gRPC `endpoint` to export spans to (http://host:4317 plaintext, https://... TLS); empty: no spans")
	fs.StringVar(&cfg.ServiceName, "service-name", "llmops", "`name` whose \"-gateway\" form is the spans' service.name")
	fs.Var((*addressList)(&cfg.InferenceBackends), "inference-backends", "comma-separated gRPC `addresses` of Inference replicas to route generation to, by adapter affinity (default: the Inference service at -backend)")
	fs.StringVar(&cfg.InferenceRouting, "inference-routing", routingAffinity, "how generation is spread over -inference-backends: `affinity` (replicas that hold the model, else rendezvous hashing, bounded by load) or round-robin")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: llmops-gateway [flags]\n\nEach flag's default can be set by its environment variable:")
		fs.VisitAll(func(f *flag.Flag) { fmt.Fprintf(fs.Output(), "  -%s\t%s\n", f.Name, envNames[f.Name]) })
		fmt.Fprintln(fs.Output())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	fromEnv := map[string]bool{}
	for name, env := range envNames {
		if value := getenv(env); value != "" && !given[name] {
			if err := fs.Set(name, value); err != nil {
				return cfg, fmt.Errorf("%s=%q: %v", env, value, err)
			}
			fromEnv[name] = true
		}
	}
	switch {
	case cfg.MaxBodyBytes <= 0:
		return cfg, errors.New("-max-body-bytes must be positive")
	case cfg.Timeout <= 0:
		return cfg, errors.New("-timeout must be positive")
	case cfg.StreamTimeout < 0 || cfg.ShutdownGrace < 0:
		return cfg, errors.New("-stream-timeout and -shutdown-grace must not be negative")
	case cfg.InferenceRouting != routingAffinity && cfg.InferenceRouting != routingRoundRobin:
		return cfg, fmt.Errorf("-inference-routing must be %s or %s, not %q", routingAffinity, routingRoundRobin, cfg.InferenceRouting)
	}
	source := func(name string) string {
		if fromEnv[name] {
			return envNames[name]
		}
		return "-" + name
	}
	if err := checkTLSFlags(cfg, source); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "llmops-gateway:", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, logger, os.Stdout); err != nil {
		logger.Error("gateway failed", "error", err.Error())
		os.Exit(1)
	}
}

// run serves until ctx ends, then shuts down within the grace period. Once listening, it writes
// one line with the bound address to out (how `llmops up` learns a port picked with :0).
func run(ctx context.Context, cfg Config, logger *slog.Logger, out io.Writer) error {
	tr, stopTracing, err := startTracing(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		// After the server has stopped: the last requests' spans are flushed.
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(flushCtx); err != nil {
			logger.Warn("spans not flushed", "error", err.Error())
		}
	}()
	conn, err := dialBackend(cfg, tr)
	if err != nil {
		return err
	}
	defer conn.Close()
	var metrics *httpMetrics
	if cfg.MetricsListen != "" {
		metrics = newHTTPMetrics()
		stopMetrics, err := serveMetrics(cfg.MetricsListen, metrics, logger)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	inference, closeInference, err := inferenceClient(ctx, cfg, conn, tr, logger)
	if err != nil {
		return err
	}
	defer closeInference()
	handler, err := newHandler(ctx, cfg, conn, inference, tr, metrics, logger)
	if err != nil {
		return err
	}
	tlsConfig, err := serverTLSConfig(cfg)
	if err != nil {
		return err
	}
	listener, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	server := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	scheme := "http://"
	if tlsConfig != nil {
		scheme = "https://"
		go func() { served <- server.ServeTLS(listener, "", "") }() // the certificate is in TLSConfig
	} else {
		go func() { served <- server.Serve(listener) }()
	}
	address := scheme + listener.Addr().String()
	fmt.Fprintf(out, "llmops-gateway listening on %s (backend %s)\n", address, cfg.Backend)
	logger.Info("gateway started", "address", address, "backend", cfg.Backend, "backend_tls", cfg.backendUsesTLS(), "tracing", tr != nil,
		"inference_backends", cfg.InferenceBackends, "inference_routing", cfg.InferenceRouting)
	if tlsConfig == nil && !isLoopback(listener.Addr()) {
		logger.Warn("serving plaintext HTTP on a non-loopback address", "address", listener.Addr().String())
	}

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	logger.Info("signal received, shutting down", "grace", cfg.ShutdownGrace.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := server.Shutdown(shutdownCtx); err != nil {
		// Streams still open after the grace period are cut.
		logger.Warn("grace period over, closing open connections", "error", err.Error())
		_ = server.Close()
	}
	logger.Info("gateway stopped")
	return nil
}

// serveMetrics serves metrics at http://address/metrics until the returned function is called.
func serveMetrics(address string, metrics *httpMetrics, logger *slog.Logger) (func(), error) {
	listener, err := net.Listen("tcp", address)
	if err != nil {
		return nil, err
	}
	server := &http.Server{
		Handler:           metrics.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	go func() { _ = server.Serve(listener) }()
	logger.Info("metrics served", "url", "http://"+listener.Addr().String()+"/metrics")
	return func() { _ = server.Close() }, nil
}
