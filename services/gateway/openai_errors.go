package main

// Errors of the OpenAI-compatible API: `{"error": {"message", "type", "param", "code"}}` with the
// HTTP status the OpenAI SDKs map to their exception classes (400 BadRequestError, 401
// AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 429 RateLimitError, 5xx
// InternalServerError), made from the services' gRPC status and its google.rpc details.

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	typeInvalidRequest = "invalid_request_error"
	typeAuthentication = "authentication_error"
	typePermission     = "permission_error"
	typeRateLimit      = "requests" // what OpenAI says for a request-count limit
	typeAPI            = "api_error"
)

// apiError is one OpenAI-shaped error answer.
type apiError struct {
	Status     int
	Message    string
	Type       string
	Param      string // "" is null
	Code       string // "" is null
	RetryAfter time.Duration
}

func (e *apiError) Error() string { return e.Message }

type errorObject struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

type errorBody struct {
	Error errorObject `json:"error"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (e *apiError) body() errorBody {
	return errorBody{Error: errorObject{Message: e.Message, Type: e.Type, Param: nullable(e.Param), Code: nullable(e.Code)}}
}

func invalidRequest(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}

func bodyTooLarge(limit int64) *apiError {
	return &apiError{
		Status:  http.StatusRequestEntityTooLarge,
		Type:    typeInvalidRequest,
		Message: fmt.Sprintf("the request body is larger than %d bytes", limit),
	}
}

// writeAPIError answers the error as JSON, with Retry-After (and retry-after-ms, which the
// OpenAI SDKs read first) when the service gave a retry hint.
func writeAPIError(w http.ResponseWriter, e *apiError) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
		w.Header().Set("Retry-After-Ms", strconv.FormatInt(e.RetryAfter.Milliseconds(), 10))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	data, _ := json.Marshal(e.body())
	_, _ = w.Write(append(data, '\n'))
}

// paramMapper turns a field the services name in a BadRequest violation into the OpenAI request
// field it came from.
type paramMapper func(field string) string

// openAIParams maps the GenerateRequest fields back: the sampling fields to their OpenAI names
// (max_new_tokens to the name the client used for the limit), the prompt to `promptParam`
// (`messages` for chat, `prompt` for completions); `model` and `messages[i].role` keep theirs.
func openAIParams(promptParam, maxTokens string) paramMapper {
	return func(field string) string {
		field = strings.TrimPrefix(field, "request.") // StreamGenerate's fields
		switch {
		case field == "":
			return ""
		case field == "sampling.max_new_tokens":
			return maxTokens
		case field == "sampling.stop" || strings.HasPrefix(field, "sampling.stop["):
			return "stop"
		case strings.HasPrefix(field, "sampling."):
			return strings.TrimPrefix(field, "sampling.")
		case field == "prompt" || field == "text" || field == "template_id" || field == "messages":
			return promptParam
		}
		return field
	}
}

// fromStatus maps a service's error to the OpenAI shape.
func fromStatus(err error, params paramMapper) *apiError {
	if e, ok := err.(*apiError); ok {
		return e
	}
	st := status.Convert(err)
	e := &apiError{Message: st.Message()}
	var field string
	var resource *errdetails.ResourceInfo
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.BadRequest:
			if field == "" && len(d.GetFieldViolations()) > 0 {
				field = d.GetFieldViolations()[0].GetField()
			}
		case *errdetails.ResourceInfo:
			resource = d
		case *errdetails.RetryInfo:
			e.RetryAfter = d.GetRetryDelay().AsDuration()
		}
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		e.Status, e.Type, e.Param = http.StatusBadRequest, typeInvalidRequest, params(field)
	case codes.NotFound:
		e.Status, e.Type = http.StatusNotFound, typeInvalidRequest
		if resource == nil || resource.GetResourceType() == "model" {
			e.Param, e.Code = "model", "model_not_found"
		}
	case codes.Unauthenticated:
		e.Status, e.Type, e.Code = http.StatusUnauthorized, typeAuthentication, "invalid_api_key"
	case codes.PermissionDenied:
		e.Status, e.Type = http.StatusForbidden, typePermission
	case codes.ResourceExhausted:
		e.Status, e.Type, e.Code = http.StatusTooManyRequests, typeRateLimit, "rate_limit_exceeded"
	case codes.Unavailable:
		e.Status, e.Type, e.Code = http.StatusServiceUnavailable, typeAPI, "service_unavailable"
	case codes.DeadlineExceeded:
		e.Status, e.Type, e.Code = http.StatusGatewayTimeout, typeAPI, "timeout"
	default:
		e.Status, e.Type = http.StatusInternalServerError, typeAPI
	}
	return e
}
