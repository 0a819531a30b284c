package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	// The services' error details (BadRequest, ResourceInfo, RequestInfo, PreconditionFailure,
	// RetryInfo, ...) must be known here to be written as JSON.
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
	"github.com/llmops/gateway/openapi"
)

// forwardedHeaders are the request headers passed to the services as gRPC metadata, by their
// canonical HTTP name. grpc-gateway always passes Authorization itself (and x-forwarded-host /
// x-forwarded-for, which it derives from the connection); every other header, Grpc-Metadata-*
// included, stays at the gateway.
var forwardedHeaders = map[string]string{
	"X-Request-Id": "x-request-id",
	"Traceparent":  "traceparent",
	"Tracestate":   "tracestate",
}

func incomingHeader(key string) (string, bool) {
	name, ok := forwardedHeaders[key]
	return name, ok
}

// The services accept the same request ids (runtime/calls.py in the Python services).
var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// marshaler writes proto3 JSON with the proto field names (as the CLI's --output json does) and
// every field, and refuses unknown fields in requests rather than dropping a misspelt one.
var marshaler = &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
	MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
	UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
}}

// registrations are the services proxied over the one backend connection; the Inference
// service's routes take their own client (inferenceClient), which may route over replicas.
var registrations = []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
	llmopsv1.RegisterRegistryServiceHandler,
	llmopsv1.RegisterTrainingServiceHandler,
	llmopsv1.RegisterEvalServiceHandler,
}

// newHandler is the gateway: the four services' routes, /healthz, /readyz, /openapi.json and
// the OpenAI-compatible API (/openai/v1) on one mux, behind the request-id, access-log and body-limit middleware,
// with tr inside a server span per request, and with metrics measured. Generation goes to
// inference (the services' Inference, or several replicas routed by adapter affinity).
func newHandler(ctx context.Context, cfg Config, conn *grpc.ClientConn, inference llmopsv1.InferenceServiceClient, tr *tracing, metrics *httpMetrics, logger *slog.Logger) (http.Handler, error) {
	mux := runtime.NewServeMux(append(append(tr.muxOptions(), metrics.muxOptions()...),
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithStreamErrorHandler(func(_ context.Context, err error) *status.Status {
			return status.Convert(knownDetailsOnly(err))
		}),
		// The services' response metadata (x-request-id, set by withRequestID already, and
		// gRPC's own headers) is not copied into Grpc-Metadata-* response headers.
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithRoutingErrorHandler(routingErrorHandler),
	)...)
	for _, register := range registrations {
		if err := register(ctx, mux, conn); err != nil {
			return nil, err
		}
	}
	if err := llmopsv1.RegisterInferenceServiceHandlerClient(ctx, mux, inference); err != nil {
		return nil, err
	}
	health := healthpb.NewHealthClient(conn)
	routes := map[string]runtime.HandlerFunc{
		"/healthz": func(w http.ResponseWriter, _ *http.Request, _ map[string]string) {
			writeJSON(w, http.StatusOK, `{"status":"ok"}`)
		},
		"/readyz": func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			serving, err := backendServing(r.Context(), health)
			switch {
			case err != nil:
				writeJSON(w, http.StatusServiceUnavailable, fmt.Sprintf(`{"status":"UNAVAILABLE","error":%q}`, err.Error()))
			case serving != healthpb.HealthCheckResponse_SERVING:
				writeJSON(w, http.StatusServiceUnavailable, fmt.Sprintf(`{"status":%q}`, serving))
			default:
				writeJSON(w, http.StatusOK, `{"status":"SERVING"}`)
			}
		},
		"/openapi.json": func(w http.ResponseWriter, _ *http.Request, _ map[string]string) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(openapi.Document)
		},
	}
	for path, handler := range routes {
		if err := mux.HandlePath(http.MethodGet, path, handler); err != nil {
			return nil, err
		}
	}
	if err := registerOpenAI(mux, conn, inference); err != nil {
		return nil, err
	}
	return tr.wrap(metrics.wrap(withRequestID(accessLog(logger, limitBody(cfg.MaxBodyBytes, mux))))), nil
}

func writeJSON(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body+"\n")
}

// errorHandler is grpc-gateway's (a google.rpc.Status as JSON, its details kept, the HTTP status
// from HTTPStatusFromCode), except that a body over the limit answers 413.
func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if body, ok := r.Body.(*limitedBody); ok && body.exceeded {
		err = tooLarge(body.limit)
	}
	var custom *runtime.HTTPStatusError
	if !errors.As(err, &custom) {
		err = knownDetailsOnly(err)
		setRetryAfter(w, err)
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// setRetryAfter gives an error that carries a google.rpc.RetryInfo (a full queue, a rate limit,
// the database briefly down) the Retry-After header HTTP clients and proxies act on, in whole
// seconds rounded up.
func setRetryAfter(w http.ResponseWriter, err error) {
	st, ok := status.FromError(err)
	if !ok {
		return
	}
	for _, detail := range st.Details() {
		if info, ok := detail.(*errdetails.RetryInfo); ok && info.GetRetryDelay() != nil {
			seconds := math.Ceil(info.GetRetryDelay().AsDuration().Seconds())
			w.Header().Set("Retry-After", strconv.Itoa(int(max(seconds, 1))))
			return
		}
	}
}

// knownDetailsOnly drops the details of a status whose type the gateway does not know (a
// service newer than the gateway): otherwise the whole error would become "failed to marshal".
func knownDetailsOnly(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	proto := st.Proto()
	known := make([]*anypb.Any, 0, len(proto.GetDetails()))
	for _, detail := range proto.GetDetails() {
		if _, err := protoregistry.GlobalTypes.FindMessageByURL(detail.GetTypeUrl()); err == nil {
			known = append(known, detail)
		}
	}
	if len(known) == len(proto.GetDetails()) {
		return err
	}
	proto.Details = known
	return status.FromProto(proto).Err()
}

func tooLarge(limit int64) error {
	return &runtime.HTTPStatusError{
		HTTPStatus: http.StatusRequestEntityTooLarge,
		Err:        status.Errorf(codes.InvalidArgument, "request body larger than %d bytes", limit),
	}
}

// routingErrorHandler answers a known path with a wrong method 405 (grpc-gateway's default says
// 501, since it maps the status through UNIMPLEMENTED); under /openai/v1 in OpenAI's error shape.
func routingErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	if isOpenAIPath(r.URL.Path) {
		openAIRoutingError(w, r, httpStatus)
		return
	}
	if httpStatus == http.StatusMethodNotAllowed {
		runtime.HTTPError(ctx, mux, m, w, r, &runtime.HTTPStatusError{
			HTTPStatus: http.StatusMethodNotAllowed,
			Err:        status.Errorf(codes.Unimplemented, "method %s not allowed on %s", r.Method, r.URL.Path),
		})
		return
	}
	runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
}

// limitedBody is a request body capped by http.MaxBytesReader that remembers hitting the cap,
// so the error handler can tell a body too large from malformed JSON.
type limitedBody struct {
	io.ReadCloser
	limit    int64
	exceeded bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		b.exceeded = true
	}
	return n, err
}

// limitBody caps request bodies at limit bytes; a declared Content-Length above it is refused
// before anything is read.
func limitBody(limit int64, mux *runtime.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit && isOpenAIPath(r.URL.Path) {
			writeAPIError(w, bodyTooLarge(limit))
			return
		}
		if r.ContentLength > limit {
			runtime.HTTPError(r.Context(), mux, marshaler, w, r, tooLarge(limit))
			return
		}
		r.Body = &limitedBody{ReadCloser: http.MaxBytesReader(w, r.Body, limit), limit: limit}
		mux.ServeHTTP(w, r)
	})
}

// withRequestID gives every request one valid X-Request-Id (the caller's, or a new one), which
// the services log and return, and sets it on the response before anything else is written.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !requestIDPattern.MatchString(id) {
			id = newRequestID()
		}
		r.Header.Set("X-Request-Id", id)
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r)
	})
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// accessLog writes one JSON line per request once it is answered.
func accessLog(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		recorder := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(recorder, r)
		if recorder.status == 0 {
			recorder.status = http.StatusOK
		}
		logger.Info("http request",
			"method", r.Method, "path", r.URL.Path, "status", recorder.status,
			"bytes", recorder.bytes, "duration_ms", time.Since(start).Milliseconds(),
			"request_id", r.Header.Get("X-Request-Id"))
	})
}

// statusRecorder notes the status and size of a response. It keeps Flush (streams are flushed
// per message) and Unwrap (http.ResponseController) working through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(p)
	s.bytes += int64(n)
	return n, err
}

func (s *statusRecorder) Flush() {
	_ = http.NewResponseController(s.ResponseWriter).Flush()
}

func (s *statusRecorder) Unwrap() http.ResponseWriter {
	return s.ResponseWriter
}
