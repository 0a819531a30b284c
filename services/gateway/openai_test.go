package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

// --- request translation (no backend) ---------------------------------------------------------

func decodeChat(t *testing.T, body string) (*plan, *apiError) {
	t.Helper()
	var req chatRequest
	if e := decodeBody(strings.NewReader(body), &req); e != nil {
		return nil, e
	}
	return translateChat(&req)
}

func decodeCompletion(t *testing.T, body string) (*plan, *apiError) {
	t.Helper()
	var req completionRequest
	if e := decodeBody(strings.NewReader(body), &req); e != nil {
		return nil, e
	}
	return translateCompletion(&req)
}

func TestChatRequestTranslation(t *testing.T) {
	p, e := decodeChat(t, `{
		"model": "helper@production",
		"messages": [
			{"role": "developer", "content": "Be brief."},
			{"role": "user", "content": [{"type": "text", "text": "Where does "}, {"type": "text", "text": "Ada live?"}], "name": "ada"},
			{"role": "assistant", "content": "In London."},
			{"role": "user", "content": "And Bob?"}
		],
		"max_tokens": 7, "max_completion_tokens": 9, "temperature": 0.5, "top_p": 0.9,
		"stop": "\n", "seed": 42, "n": 2, "stream": true, "stream_options": {"include_usage": true},
		"user": "ignored", "some_future_field": {"x": 1}, "top_k": 5, "repetition_penalty": 1.1,
		"logprobs": false, "response_format": {"type": "text"}, "presence_penalty": 0
	}`)
	if e != nil {
		t.Fatal(e)
	}
	if p.model != "helper@production" || !p.stream || !p.includeUsage || p.n != 2 || p.maxTokens != "max_completion_tokens" {
		t.Errorf("plan: %+v", p)
	}
	req := p.requests[0]
	got := []string{}
	for _, m := range req.GetMessages() {
		got = append(got, m.GetRole()+": "+m.GetContent())
	}
	want := []string{"system: Be brief.", "user: Where does Ada live?", "assistant: In London.", "user: And Bob?"}
	if !slices.Equal(got, want) {
		t.Errorf("messages: %q", got)
	}
	s := req.GetSampling()
	if s.GetMaxNewTokens() != 9 || s.GetTemperature() != 0.5 || s.GetTopP() != 0.9 || s.GetSeed() != 42 ||
		s.GetN() != 2 || !slices.Equal(s.GetStop(), []string{"\n"}) || s.GetTopK() != 5 || s.GetRepetitionPenalty() != 1.1 {
		t.Errorf("sampling: %v", s)
	}

	p, e = decodeChat(t, `{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b"], "stream_options": {"include_usage": true}}`)
	if e != nil || !slices.Equal(p.requests[0].GetSampling().GetStop(), []string{"a", "b"}) || p.stream || p.includeUsage || p.n != 1 || p.maxTokens != "max_tokens" {
		t.Errorf("defaults: %+v %v", p, e)
	}
}

func TestChatRequestsWeRefuseNameTheirParam(t *testing.T) {
	message := `"messages": [{"role": "user", "content": "hi"}]`
	for _, c := range []struct{ body, param string }{
		{`{` + message + `}`, "model"},
		{`{"model": "", ` + message + `}`, "model"},
		{`{"model": 5, ` + message + `}`, "model"},
		{`{"model": "m"}`, "messages"},
		{`{"model": "m", "messages": []}`, "messages"},
		{`{"model": "m", "messages": "hi"}`, "messages"},
		{`{"model": "m", "messages": [{"content": "hi"}]}`, "messages[0].role"},
		{`{"model": "m", "messages": [{"role": "user"}]}`, "messages[0].content"},
		{`{"model": "m", "messages": [{"role": "user", "content": 3}]}`, "messages[0].content"},
		{`{"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "x", "tool_call_id": "1"}]}`, "messages[1].role"},
		{`{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}`, "messages[0].content[0].type"},
		{`{"model": "m", "messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}]}`, "messages[0].tool_calls"},
		{`{"model": "m", ` + message + `, "tools": [{"type": "function"}]}`, "tools"},
		{`{"model": "m", ` + message + `, "tool_choice": "auto"}`, "tool_choice"},
		{`{"model": "m", ` + message + `, "functions": []}`, "functions"},
		{`{"model": "m", ` + message + `, "logprobs": true}`, "logprobs"},
		{`{"model": "m", ` + message + `, "top_logprobs": 2}`, "top_logprobs"},
		{`{"model": "m", ` + message + `, "response_format": {"type": "json_object"}}`, "response_format"},
		{`{"model": "m", ` + message + `, "audio": {"voice": "x"}}`, "audio"},
		{`{"model": "m", ` + message + `, "modalities": ["text", "audio"]}`, "modalities"},
		{`{"model": "m", ` + message + `, "presence_penalty": 0.5}`, "presence_penalty"},
		{`{"model": "m", ` + message + `, "frequency_penalty": 1}`, "frequency_penalty"},
		{`{"model": "m", ` + message + `, "logit_bias": {"50256": -100}}`, "logit_bias"},
		{`{"model": "m", ` + message + `, "max_tokens": 0}`, "max_tokens"},
		{`{"model": "m", ` + message + `, "max_completion_tokens": -1}`, "max_completion_tokens"},
		{`{"model": "m", ` + message + `, "max_tokens": "many"}`, "max_tokens"},
		{`{"model": "m", ` + message + `, "n": 0}`, "n"},
		{`{"model": "m", ` + message + `, "top_p": 0}`, "top_p"},
		{`{"model": "m", ` + message + `, "stop": 5}`, "stop"},
		{`{"model": "m", ` + message + `, "temperature": "hot"}`, "temperature"},
		{`[1]`, ""},
		{`{"model": "m",`, ""},
	} {
		_, e := decodeChat(t, c.body)
		if e == nil {
			t.Errorf("%s: accepted", c.body)
			continue
		}
		if e.Status != http.StatusBadRequest || e.Type != typeInvalidRequest || e.Param != c.param {
			t.Errorf("%s: %d %s param %q, want param %q (%s)", c.body, e.Status, e.Type, e.Param, c.param, e.Message)
		}
	}
}

func TestCompletionRequestTranslation(t *testing.T) {
	p, e := decodeCompletion(t, `{"model": "tiny", "prompt": ["one", "two"], "n": 2, "max_tokens": 3, "echo": false, "best_of": 1, "suffix": null, "logprobs": null}`)
	if e != nil {
		t.Fatal(e)
	}
	if len(p.requests) != 2 || p.requests[1].GetPrompt() != "two" || p.n != 2 || p.requests[0].GetSampling().GetMaxNewTokens() != 3 {
		t.Errorf("plan: %+v", p)
	}
	p, e = decodeCompletion(t, `{"model": "tiny", "prompt": "one"}`)
	if e != nil || len(p.requests) != 1 || p.requests[0].GetPrompt() != "one" {
		t.Errorf("one prompt: %+v %v", p, e)
	}
	for _, c := range []struct{ body, param string }{
		{`{"model": "tiny"}`, "prompt"},
		{`{"model": "tiny", "prompt": []}`, "prompt"},
		{`{"model": "tiny", "prompt": [1, 2, 3]}`, "prompt"},
		{`{"model": "tiny", "prompt": "x", "echo": true}`, "echo"},
		{`{"model": "tiny", "prompt": "x", "logprobs": 2}`, "logprobs"},
		{`{"model": "tiny", "prompt": "x", "suffix": "end"}`, "suffix"},
		{`{"model": "tiny", "prompt": "x", "best_of": 3}`, "best_of"},
		{`{"prompt": "x"}`, "model"},
	} {
		_, e := decodeCompletion(t, c.body)
		if e == nil || e.Status != http.StatusBadRequest || e.Param != c.param {
			t.Errorf("%s: %+v, want param %q", c.body, e, c.param)
		}
	}
}

// --- error mapping (no backend) ---------------------------------------------------------------

func withDetails(t *testing.T, code codes.Code, message string, details ...protoadapt.MessageV1) error {
	t.Helper()
	st, err := status.New(code, message).WithDetails(details...)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func badRequest(field string) protoadapt.MessageV1 {
	return &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: "bad"}}}
}

func TestErrorsMapFromGRPCStatus(t *testing.T) {
	chat := openAIParams("messages", "max_tokens")
	completions := openAIParams("prompt", "max_completion_tokens")
	retry := &errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)}
	modelInfo := &errdetails.ResourceInfo{ResourceType: "model", ResourceName: "ghost"}
	templateInfo := &errdetails.ResourceInfo{ResourceType: "prompt_template", ResourceName: "t"}
	for _, c := range []struct {
		name             string
		err              error
		params           paramMapper
		status           int
		typ, param, code string
	}{
		{"temperature", withDetails(t, codes.InvalidArgument, "x", badRequest("sampling.temperature")), chat, 400, typeInvalidRequest, "temperature", ""},
		{"stream max tokens", withDetails(t, codes.InvalidArgument, "x", badRequest("request.sampling.max_new_tokens")), completions, 400, typeInvalidRequest, "max_completion_tokens", ""},
		{"stop entry", withDetails(t, codes.InvalidArgument, "x", badRequest("sampling.stop[1]")), chat, 400, typeInvalidRequest, "stop", ""},
		{"n", withDetails(t, codes.InvalidArgument, "x", badRequest("request.sampling.n")), chat, 400, typeInvalidRequest, "n", ""},
		{"role", withDetails(t, codes.InvalidArgument, "x", badRequest("messages[0].role")), chat, 400, typeInvalidRequest, "messages[0].role", ""},
		{"chat prompt", withDetails(t, codes.InvalidArgument, "x", badRequest("prompt")), chat, 400, typeInvalidRequest, "messages", ""},
		{"chat messages", withDetails(t, codes.InvalidArgument, "x", badRequest("request.messages")), chat, 400, typeInvalidRequest, "messages", ""},
		{"completion prompt", withDetails(t, codes.InvalidArgument, "x", badRequest("request.prompt")), completions, 400, typeInvalidRequest, "prompt", ""},
		{"model", withDetails(t, codes.InvalidArgument, "x", badRequest("model")), chat, 400, typeInvalidRequest, "model", ""},
		{"precondition", status.Error(codes.FailedPrecondition, "no base"), chat, 400, typeInvalidRequest, "", ""},
		{"out of range", status.Error(codes.OutOfRange, "x"), chat, 400, typeInvalidRequest, "", ""},
		{"unknown model", withDetails(t, codes.NotFound, "model 'ghost' not found", modelInfo), chat, 404, typeInvalidRequest, "model", "model_not_found"},
		{"unknown template", withDetails(t, codes.NotFound, "x", templateInfo), chat, 404, typeInvalidRequest, "", ""},
		{"no key", status.Error(codes.Unauthenticated, "missing API key"), chat, 401, typeAuthentication, "", "invalid_api_key"},
		{"role too low", status.Error(codes.PermissionDenied, "x"), chat, 403, typePermission, "", ""},
		{"full", withDetails(t, codes.ResourceExhausted, "queue full", retry), chat, 429, typeRateLimit, "", "rate_limit_exceeded"},
		{"down", status.Error(codes.Unavailable, "x"), chat, 503, typeAPI, "", "service_unavailable"},
		{"slow", status.Error(codes.DeadlineExceeded, "x"), chat, 504, typeAPI, "", "timeout"},
		{"internal", status.Error(codes.Internal, "x"), chat, 500, typeAPI, "", ""},
		{"conflict", status.Error(codes.AlreadyExists, "x"), chat, 500, typeAPI, "", ""},
		{"not grpc", fmt.Errorf("boom"), chat, 500, typeAPI, "", ""},
	} {
		e := fromStatus(c.err, c.params)
		if e.Status != c.status || e.Type != c.typ || e.Param != c.param || e.Code != c.code {
			t.Errorf("%s: %d %q param %q code %q; want %d %q %q %q", c.name, e.Status, e.Type, e.Param, e.Code, c.status, c.typ, c.param, c.code)
		}
	}

	e := fromStatus(withDetails(t, codes.ResourceExhausted, "queue full", retry), chat)
	recorder := httptest.NewRecorder()
	writeAPIError(recorder, e)
	if recorder.Code != 429 || recorder.Header().Get("Retry-After") != "2" || recorder.Header().Get("Retry-After-Ms") != "1500" {
		t.Errorf("429: %d %v", recorder.Code, recorder.Header())
	}
	var body map[string]map[string]any
	if err := json.Unmarshal(recorder.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	got := body["error"]
	if got["message"] != "queue full" || got["param"] != nil || got["code"] != "rate_limit_exceeded" || len(got) != 4 {
		t.Errorf("body: %v", got)
	}
}

// --- the model list (no backend) --------------------------------------------------------------

func TestModelEntries(t *testing.T) {
	created := timestamppb.New(time.Unix(1700000000, 0))
	base1 := &llmopsv1.Model{Id: "mdl-000000000001", Name: "tiny", Version: 1, Kind: llmopsv1.ModelKind_MODEL_KIND_BASE, CreateTime: created}
	base2 := &llmopsv1.Model{Id: "mdl-000000000002", Name: "tiny", Version: 2, Kind: llmopsv1.ModelKind_MODEL_KIND_BASE, CreateTime: created}
	onOld := &llmopsv1.Model{
		Id: "mdl-000000000003", Name: "helper", Version: 1, Kind: llmopsv1.ModelKind_MODEL_KIND_ADAPTER,
		Origin: &llmopsv1.ModelOrigin{BaseModel: base1.Id}, Aliases: []string{"staging", "production"}, CreateTime: created,
	}
	onNew := &llmopsv1.Model{
		Id: "mdl-000000000004", Name: "helper", Version: 2, Kind: llmopsv1.ModelKind_MODEL_KIND_ADAPTER,
		Origin: &llmopsv1.ModelOrigin{BaseModel: base2.Id}, CreateTime: created,
	}
	merged := &llmopsv1.Model{
		Id: "mdl-000000000005", Name: "merged", Version: 1, Kind: llmopsv1.ModelKind_MODEL_KIND_MERGED,
		Origin: &llmopsv1.ModelOrigin{BaseModel: base2.Id}, CreateTime: created,
	}
	entries := modelEntries([]*llmopsv1.Model{merged, onNew, onOld, base2, base1})
	got := []string{}
	for _, e := range entries {
		parent := ""
		if e.Parent != nil {
			parent = " <- " + *e.Parent
		}
		if e.Object != "model" || e.OwnedBy != "llmops" || e.Created != 1700000000 {
			t.Errorf("entry %+v", e)
		}
		got = append(got, e.ID+parent)
	}
	want := []string{
		"merged",
		"helper <- tiny",
		"mdl-000000000003 <- mdl-000000000001",
		"helper@production <- mdl-000000000001",
		"helper@staging <- mdl-000000000001",
		"tiny",
		"mdl-000000000001",
	}
	if !slices.Equal(got, want) {
		t.Errorf("entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// --- through the gateway, against fake services -------------------------------------------------

type fakeInference struct {
	llmopsv1.UnimplementedInferenceServiceServer
	calls   chan call
	release chan struct{} // the "slow" stream sends its second delta once this is closed
}

func echoText(req *llmopsv1.GenerateRequest) string {
	if messages := req.GetMessages(); len(messages) > 0 {
		return messages[len(messages)-1].GetContent()
	}
	return req.GetPrompt()
}

func refusal(req *llmopsv1.GenerateRequest, prefix string) error {
	switch {
	case req.GetModel() == "ghost":
		st, _ := status.New(codes.NotFound, "model 'ghost' not found").WithDetails(&errdetails.ResourceInfo{ResourceType: "model", ResourceName: "ghost"})
		return st.Err()
	case req.GetModel() == "busy":
		st, _ := status.New(codes.ResourceExhausted, "the engine is full").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)})
		return st.Err()
	case req.GetSampling().GetTemperature() > 2:
		st, _ := status.New(codes.InvalidArgument, "sampling settings out of range").WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: prefix + "sampling.temperature", Description: "must be 0..2"}},
		})
		return st.Err()
	}
	return nil
}

func (f *fakeInference) Generate(ctx context.Context, req *llmopsv1.GenerateRequest) (*llmopsv1.GenerateResponse, error) {
	record(ctx, f.calls)
	if err := refusal(req, ""); err != nil {
		return nil, err
	}
	n := max(req.GetSampling().GetN(), 1)
	resp := &llmopsv1.GenerateResponse{Model: "mdl-000000000001", Usage: &llmopsv1.Usage{PromptTokens: 3, CompletionTokens: 2 * n}}
	for i := range n {
		resp.Choices = append(resp.Choices, &llmopsv1.Choice{Index: i, Text: fmt.Sprintf("%s#%d", echoText(req), i), FinishReason: llmopsv1.FinishReason_FINISH_REASON_LENGTH})
	}
	resp.Text, resp.FinishReason = resp.Choices[0].Text, resp.Choices[0].FinishReason
	return resp, nil
}

func (f *fakeInference) StreamGenerate(req *llmopsv1.StreamGenerateRequest, stream grpc.ServerStreamingServer[llmopsv1.StreamGenerateResponse]) error {
	record(stream.Context(), f.calls)
	r := req.GetRequest()
	if err := refusal(r, "request."); err != nil {
		return err
	}
	n := max(r.GetSampling().GetN(), 1)
	for i := range n {
		if err := stream.Send(&llmopsv1.StreamGenerateResponse{TextDelta: echoText(r), Index: i}); err != nil {
			return err
		}
	}
	switch r.GetModel() {
	case "broken":
		return status.Error(codes.Internal, "the engine failed")
	case "slow":
		select {
		case <-f.release:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
	for i := range n {
		last := &llmopsv1.StreamGenerateResponse{TextDelta: fmt.Sprintf("#%d", i), Index: i, FinishReason: llmopsv1.FinishReason_FINISH_REASON_STOP}
		if i == n-1 {
			last.Usage = &llmopsv1.Usage{PromptTokens: 3, CompletionTokens: 2 * n}
		}
		if err := stream.Send(last); err != nil {
			return err
		}
	}
	return nil
}

type fakeModels struct {
	llmopsv1.UnimplementedRegistryServiceServer
	models []*llmopsv1.Model
}

func (f *fakeModels) ListModels(_ context.Context, req *llmopsv1.ListModelsRequest) (*llmopsv1.ListModelsResponse, error) {
	// one model a page, to prove the gateway pages through
	start := 0
	if req.GetPageToken() != "" {
		_, _ = fmt.Sscan(req.GetPageToken(), &start)
	}
	resp := &llmopsv1.ListModelsResponse{Models: f.models[start : start+1]}
	if start+1 < len(f.models) {
		resp.NextPageToken = fmt.Sprint(start + 1)
	}
	return resp, nil
}

func (f *fakeModels) GetModel(_ context.Context, req *llmopsv1.GetModelRequest) (*llmopsv1.Model, error) {
	for _, m := range f.models {
		if m.GetId() == req.GetModel() || m.GetName() == req.GetModel() || slices.Contains(m.GetAliases(), strings.TrimPrefix(req.GetModel(), m.GetName()+"@")) {
			return m, nil
		}
	}
	st, _ := status.New(codes.NotFound, fmt.Sprintf("model %q not found", req.GetModel())).WithDetails(&errdetails.ResourceInfo{ResourceType: "model"})
	return nil, st.Err()
}

type openAIBackend struct {
	inference *fakeInference
	url       string
}

func startOpenAIBackend(t *testing.T) *openAIBackend {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inference := &fakeInference{calls: make(chan call, 64), release: make(chan struct{})}
	base := &llmopsv1.Model{Id: "mdl-000000000001", Name: "tiny", Version: 1, Kind: llmopsv1.ModelKind_MODEL_KIND_BASE}
	adapter := &llmopsv1.Model{
		Id: "mdl-000000000002", Name: "helper", Version: 1, Kind: llmopsv1.ModelKind_MODEL_KIND_ADAPTER,
		Origin: &llmopsv1.ModelOrigin{BaseModel: base.Id}, Aliases: []string{"production"},
	}
	server := grpc.NewServer()
	llmopsv1.RegisterInferenceServiceServer(server, inference)
	llmopsv1.RegisterRegistryServiceServer(server, &fakeModels{models: []*llmopsv1.Model{adapter, base}})
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	gw := startGateway(t, testConfig(listener.Addr().String()))
	return &openAIBackend{inference: inference, url: gw.URL + openAIPrefix}
}

func decodeJSON(t *testing.T, body string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, body)
	}
	return v
}

func openAIErrorOf(t *testing.T, body string) map[string]any {
	t.Helper()
	e, ok := decodeJSON(t, body)["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object: %s", body)
	}
	return e
}

func TestChatCompletionsThroughTheGateway(t *testing.T) {
	b := startOpenAIBackend(t)
	headers := map[string]string{"Authorization": "Bearer sk-test", "X-Request-Id": "oa-1", "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	resp, body := do(t, "POST", b.url+"/chat/completions", `{"model": "helper@production", "messages": [{"role": "user", "content": "hi"}], "n": 2}`, headers)
	if resp.StatusCode != 200 || resp.Header.Get("X-Request-Id") != "oa-1" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	seen := <-b.inference.calls
	for key, want := range map[string]string{"authorization": "Bearer sk-test", "x-request-id": "oa-1", "traceparent": headers["Traceparent"]} {
		if got := seen.md.Get(key); len(got) != 1 || got[0] != want {
			t.Errorf("metadata %s: %q", key, got)
		}
	}
	if !seen.hasDL {
		t.Error("Generate had no deadline")
	}
	answer := decodeJSON(t, body)
	if answer["object"] != "chat.completion" || answer["model"] != "helper@production" || !strings.HasPrefix(answer["id"].(string), "chatcmpl-") {
		t.Errorf("answer: %v", answer)
	}
	choices := answer["choices"].([]any)
	second := choices[1].(map[string]any)
	message := second["message"].(map[string]any)
	if len(choices) != 2 || second["index"] != 1.0 || message["role"] != "assistant" || message["content"] != "hi#1" || second["finish_reason"] != "length" {
		t.Errorf("choices: %v", choices)
	}
	if usage := answer["usage"].(map[string]any); usage["prompt_tokens"] != 3.0 || usage["completion_tokens"] != 4.0 || usage["total_tokens"] != 7.0 {
		t.Errorf("usage: %v", usage)
	}

	resp, body = do(t, "POST", b.url+"/chat/completions", `{"model": "ghost", "messages": [{"role": "user", "content": "hi"}]}`, nil)
	if e := openAIErrorOf(t, body); resp.StatusCode != 404 || e["code"] != "model_not_found" || e["param"] != "model" {
		t.Errorf("ghost: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "POST", b.url+"/chat/completions", `{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}`, nil)
	if e := openAIErrorOf(t, body); resp.StatusCode != 400 || e["param"] != "temperature" || e["type"] != typeInvalidRequest {
		t.Errorf("temperature: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "POST", b.url+"/chat/completions", `{"model": "busy", "messages": [{"role": "user", "content": "hi"}]}`, nil)
	if e := openAIErrorOf(t, body); resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || e["code"] != "rate_limit_exceeded" {
		t.Errorf("busy: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, body = do(t, "POST", b.url+"/chat/completions", `{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tools": []}`, nil)
	if e := openAIErrorOf(t, body); resp.StatusCode != 400 || e["param"] != "tools" {
		t.Errorf("tools: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "POST", b.url+"/chat/completions", `{"model": `, nil)
	if e := openAIErrorOf(t, body); resp.StatusCode != 400 || e["type"] != typeInvalidRequest {
		t.Errorf("bad JSON: %d %s", resp.StatusCode, body)
	}
}

func TestCompletionsIndexAcrossPrompts(t *testing.T) {
	b := startOpenAIBackend(t)
	resp, body := do(t, "POST", b.url+"/completions", `{"model": "tiny", "prompt": ["a", "b"], "n": 2}`, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	answer := decodeJSON(t, body)
	texts := []string{}
	for i, c := range answer["choices"].([]any) {
		choice := c.(map[string]any)
		if choice["index"] != float64(i) {
			t.Errorf("choice %d: %v", i, choice)
		}
		texts = append(texts, choice["text"].(string))
	}
	if answer["object"] != "text_completion" || !slices.Equal(texts, []string{"a#0", "a#1", "b#0", "b#1"}) {
		t.Errorf("answer: %s", body)
	}
	if usage := answer["usage"].(map[string]any); usage["prompt_tokens"] != 6.0 || usage["completion_tokens"] != 8.0 {
		t.Errorf("usage: %v", usage)
	}
	resp, body = do(t, "POST", b.url+"/completions", `{"model": "tiny", "prompt": ["a", "b"], "temperature": 9}`, nil)
	if e := openAIErrorOf(t, body); resp.StatusCode != 400 || e["param"] != "temperature" {
		t.Errorf("temperature: %d %s", resp.StatusCode, body)
	}
}

// sseEvents reads `data:` lines, one event at a time.
type sseEvents struct {
	t     *testing.T
	lines *bufio.Reader
}

func (s *sseEvents) next() string {
	s.t.Helper()
	for {
		line, err := s.lines.ReadString('\n')
		if err != nil {
			s.t.Fatalf("stream ended: %v", err)
		}
		if data, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "data: "); ok {
			return data
		}
		if strings.TrimSpace(line) != "" {
			s.t.Fatalf("not SSE: %q", line)
		}
	}
}

func openStream(t *testing.T, url, body string) (*http.Response, *sseEvents) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, &sseEvents{t: t, lines: bufio.NewReader(resp.Body)}
}

func TestChatStreamsAreServerSentEventsFlushedPerEvent(t *testing.T) {
	b := startOpenAIBackend(t)
	resp, events := openStream(t, b.url+"/chat/completions",
		`{"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}}`)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	type chunkJSON struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Index int `json:"index"`
			Delta struct {
				Role    *string `json:"role"`
				Content *string `json:"content"`
			} `json:"delta"`
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
		Usage *usageJSON `json:"usage"`
	}
	parse := func(data string) chunkJSON {
		var c chunkJSON
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("%v: %s", err, data)
		}
		if c.Object != "chat.completion.chunk" || c.Model != "slow" || !strings.HasPrefix(c.ID, "chatcmpl-") {
			t.Errorf("chunk: %s", data)
		}
		return c
	}
	opening := parse(events.next())
	if d := opening.Choices[0].Delta; d.Role == nil || *d.Role != "assistant" || d.Content == nil || *d.Content != "" {
		t.Errorf("opening: %+v", opening)
	}
	// The first delta arrives while the service still holds back the rest.
	first := parse(events.next())
	if *first.Choices[0].Delta.Content != "hi" || first.Choices[0].FinishReason != nil {
		t.Errorf("first: %+v", first)
	}
	close(b.inference.release)
	if c := parse(events.next()); *c.Choices[0].Delta.Content != "#0" {
		t.Errorf("second: %+v", c)
	}
	if c := parse(events.next()); c.Choices[0].Delta.Content != nil || c.Choices[0].Delta.Role != nil || *c.Choices[0].FinishReason != "stop" {
		t.Errorf("finish: %+v", c)
	}
	if c := parse(events.next()); len(c.Choices) != 0 || c.Usage == nil || c.Usage.TotalTokens != 5 {
		t.Errorf("usage: %+v", c)
	}
	if done := events.next(); done != "[DONE]" {
		t.Errorf("end: %q", done)
	}
}

func TestStreamErrorsBeforeAndAfterTheFirstEvent(t *testing.T) {
	b := startOpenAIBackend(t)
	resp, body := do(t, "POST", b.url+"/chat/completions", `{"model": "ghost", "messages": [{"role": "user", "content": "hi"}], "stream": true}`, nil)
	if e := openAIErrorOf(t, body); resp.StatusCode != 404 || e["code"] != "model_not_found" {
		t.Errorf("before: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "POST", b.url+"/completions", `{"model": "tiny", "prompt": "x", "stream": true, "temperature": 3}`, nil)
	if e := openAIErrorOf(t, body); resp.StatusCode != 400 || e["param"] != "temperature" {
		t.Errorf("before, completions: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "POST", b.url+"/completions", `{"model": "broken", "prompt": "x", "stream": true}`, nil)
	lines := strings.Split(strings.TrimSpace(body), "\n\n")
	if resp.StatusCode != 200 || len(lines) != 2 || !strings.HasPrefix(lines[0], `data: {"id":"cmpl-`) {
		t.Fatalf("after: %d %q", resp.StatusCode, lines)
	}
	if e := openAIErrorOf(t, strings.TrimPrefix(lines[1], "data: ")); e["type"] != typeAPI || e["message"] != "the engine failed" {
		t.Errorf("after: %v", e)
	}
}

func TestCompletionStreamsOfSeveralPrompts(t *testing.T) {
	b := startOpenAIBackend(t)
	close(b.inference.release)
	resp, body := do(t, "POST", b.url+"/completions", `{"model": "tiny", "prompt": ["a", "b"], "n": 2, "stream": true}`, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	texts := map[int]string{}
	finished := map[int]string{}
	events := strings.Split(strings.TrimSpace(body), "\n\n")
	if events[len(events)-1] != "data: [DONE]" {
		t.Errorf("end: %q", events[len(events)-1])
	}
	for _, event := range events[:len(events)-1] {
		var c struct {
			Object  string       `json:"object"`
			Choices []textChoice `json:"choices"`
			Usage   *usageJSON   `json:"usage"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(event, "data: ")), &c); err != nil || c.Object != "text_completion" || len(c.Choices) != 1 || c.Usage != nil {
			t.Fatalf("%q: %v", event, err)
		}
		choice := c.Choices[0]
		texts[choice.Index] += choice.Text
		if choice.FinishReason != nil {
			finished[choice.Index] = *choice.FinishReason
		}
	}
	want := map[int]string{0: "a#0", 1: "a#1", 2: "b#0", 3: "b#1"}
	for i, text := range want {
		if texts[i] != text || finished[i] != "stop" {
			t.Errorf("choice %d: %q %q", i, texts[i], finished[i])
		}
	}
}

func TestModelsThroughTheGateway(t *testing.T) {
	b := startOpenAIBackend(t)
	resp, body := do(t, "GET", b.url+"/models", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var list modelList
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	if list.Object != "list" || !slices.Equal(ids, []string{"helper", "helper@production", "tiny"}) || *list.Data[0].Parent != "tiny" || list.Data[2].Parent != nil {
		t.Errorf("list: %s", body)
	}
	resp, body = do(t, "GET", b.url+"/models/helper@production", "", nil)
	if m := decodeJSON(t, body); resp.StatusCode != 200 || m["id"] != "helper@production" || m["object"] != "model" || m["parent"] != "tiny" {
		t.Errorf("retrieve: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "GET", b.url+"/models/ghost", "", nil)
	if e := openAIErrorOf(t, body); resp.StatusCode != 404 || e["code"] != "model_not_found" {
		t.Errorf("unknown: %d %s", resp.StatusCode, body)
	}
}

func TestOpenAIRoutingErrorsAndBodyLimit(t *testing.T) {
	b := startOpenAIBackend(t)
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/chat/completions", "", http.StatusMethodNotAllowed},
		{"DELETE", "/models", "", http.StatusMethodNotAllowed},
		{"POST", "/models/tiny", "{}", http.StatusMethodNotAllowed},
		{"GET", "/embeddings", "", http.StatusNotFound},
		{"POST", "/chat/completions", `{"model": "tiny", "messages": [{"role": "user", "content": "` + strings.Repeat("x", 2000) + `"}]}`, http.StatusRequestEntityTooLarge},
	} {
		resp, body := do(t, c.method, b.url+c.path, c.body, nil)
		if e := openAIErrorOf(t, body); resp.StatusCode != c.want || e["type"] != typeInvalidRequest {
			t.Errorf("%s %s: %d, want %d: %s", c.method, c.path, resp.StatusCode, c.want, body)
		}
	}
	// A chunked body over the limit (no Content-Length) is found while reading.
	req, _ := http.NewRequest("POST", b.url+"/chat/completions", strings.NewReader(strings.Repeat(" ", 2000)+"{}"))
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked: %d", resp.StatusCode)
	}
}
