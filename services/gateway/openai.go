package main

// The OpenAI-compatible API under /openai/v1, on the gateway's mux (so request ids,
// body limits and access logs apply): chat and text completions (unary and server-sent events)
// through the Inference service (routed over its replicas when -inference-backends names
// several), and the model list through the Registry on the backend connection. Authorization,
// X-Request-Id and traceparent reach the services as gRPC metadata, as on every other route.

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

// openAIPrefix is where the OpenAI-compatible routes live: an OpenAI SDK's base_url is
// http://HOST:PORT/openai/v1.
const openAIPrefix = "/openai/v1"

const (
	methodGenerate       = "/llmops.v1.InferenceService/Generate"
	methodStreamGenerate = "/llmops.v1.InferenceService/StreamGenerate"
	methodListModels     = "/llmops.v1.RegistryService/ListModels"
	methodGetModel       = "/llmops.v1.RegistryService/GetModel"
	modelsPageSize       = 1000
)

type openAIServer struct {
	mux       *runtime.ServeMux
	inference llmopsv1.InferenceServiceClient
	registry  llmopsv1.RegistryServiceClient
	training  llmopsv1.TrainingServiceClient
	now       func() time.Time
	// baseSizes caches base models' weight sizes by id (a model's weights never change), which
	// pick the default learning rate that learning_rate_multiplier scales.
	baseSizes sync.Map
}

// registerOpenAI adds the /openai/v1 routes to the mux.
func registerOpenAI(mux *runtime.ServeMux, conn *grpc.ClientConn, inference llmopsv1.InferenceServiceClient) error {
	s := &openAIServer{
		mux:       mux,
		inference: inference,
		registry:  llmopsv1.NewRegistryServiceClient(conn),
		training:  llmopsv1.NewTrainingServiceClient(conn),
		now:       time.Now,
	}
	routes := []struct {
		method, path string
		handler      runtime.HandlerFunc
	}{
		{http.MethodPost, "/chat/completions", s.chatCompletions},
		{http.MethodPost, "/completions", s.completions},
		{http.MethodGet, "/models", s.listModels},
		{http.MethodGet, "/models/{id}", s.getModel},
		{http.MethodPost, "/files", s.createFile},
		{http.MethodGet, "/files", s.listFiles},
		{http.MethodGet, "/files/{id}", s.getFile},
		{http.MethodPost, "/fine_tuning/jobs", s.createJob},
		{http.MethodGet, "/fine_tuning/jobs", s.listJobs},
		{http.MethodGet, "/fine_tuning/jobs/{id}", s.jobCall(methodGetJob, s.getJob)},
		{http.MethodPost, "/fine_tuning/jobs/{id}/cancel", s.jobCall(methodCancelJob, s.cancelJob)},
		{http.MethodPost, "/fine_tuning/jobs/{id}/pause", s.jobCall(methodPauseJob, s.pauseJob)},
		{http.MethodPost, "/fine_tuning/jobs/{id}/resume", s.jobCall(methodResumeJob, s.resumeJob)},
		{http.MethodGet, "/fine_tuning/jobs/{id}/events", s.listEvents},
		{http.MethodGet, "/fine_tuning/jobs/{id}/checkpoints", s.listCheckpoints},
		{http.MethodGet, "/openapi.json", serveOpenAIDocument},
	}
	for _, route := range routes {
		if err := mux.HandlePath(route.method, openAIPrefix+route.path, route.handler); err != nil {
			return err
		}
	}
	return nil
}

// openAIDocument is the OpenAPI 3.0 document of these routes, served at
// /openai/v1/openapi.json. Written by hand (the routes are not generated from the protos): each
// route's request fields as the handlers in openai*.go read them.
//
//go:embed openai_openapi.json
var openAIDocument []byte

// serveOpenAIDocument answers the OpenAPI document of these routes.
func serveOpenAIDocument(w http.ResponseWriter, _ *http.Request, _ map[string]string) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAIDocument)
}

func isOpenAIPath(path string) bool {
	return path == openAIPrefix || strings.HasPrefix(path, openAIPrefix+"/")
}

// openAIRoutingError answers a wrong method (405) or an unknown path (404) under /openai/v1.
func openAIRoutingError(w http.ResponseWriter, r *http.Request, httpStatus int) {
	e := &apiError{Status: httpStatus, Type: typeInvalidRequest}
	switch httpStatus {
	case http.StatusMethodNotAllowed:
		e.Message = fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path)
	case http.StatusNotFound:
		e.Message = fmt.Sprintf("invalid URL (%s %s)", r.Method, r.URL.Path)
	default:
		e.Message = http.StatusText(httpStatus)
	}
	writeAPIError(w, e)
}

// callContext is the request's context with the metadata every route passes on (authorization,
// x-request-id, traceparent, tracestate; Grpc-Timeout as the deadline).
func (s *openAIServer) callContext(r *http.Request, method string) (context.Context, *apiError) {
	ctx, err := runtime.AnnotateContext(r.Context(), s.mux, r, method)
	if err != nil {
		return nil, invalidRequest("", "%s", status.Convert(err).Message())
	}
	return ctx, nil
}

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func finishReason(reason llmopsv1.FinishReason) string {
	if reason == llmopsv1.FinishReason_FINISH_REASON_LENGTH {
		return "length"
	}
	return "stop"
}

type usageJSON struct {
	PromptTokens     int32 `json:"prompt_tokens"`
	CompletionTokens int32 `json:"completion_tokens"`
	TotalTokens      int32 `json:"total_tokens"`
}

func (u *usageJSON) add(usage *llmopsv1.Usage) {
	u.PromptTokens += usage.GetPromptTokens()
	u.CompletionTokens += usage.GetCompletionTokens()
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
}

func writeJSONValue(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	encoder := json.NewEncoder(&buf)
	encoder.SetEscapeHTML(false)
	_ = encoder.Encode(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// --- chat and text completions ----------------------------------------------------------------

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   usageJSON    `json:"usage"`
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      assistantOutput `json:"message"`
	FinishReason string          `json:"finish_reason"`
	Logprobs     *struct{}       `json:"logprobs"`
}

type assistantOutput struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

type textCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []textChoice `json:"choices"`
	Usage   usageJSON    `json:"usage"`
}

type textChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// answer is one generated choice, its index counted across the request's prompts.
type answer struct {
	index        int
	text         string
	finishReason string
}

// answers flattens the responses of a plan's requests: prompt p's choice c is index p*n + c.
func answers(p *plan, responses []*llmopsv1.GenerateResponse) ([]answer, usageJSON) {
	var out []answer
	var usage usageJSON
	for i, resp := range responses {
		usage.add(resp.GetUsage())
		choices := resp.GetChoices()
		if len(choices) == 0 { // a service that predates `choices`
			choices = []*llmopsv1.Choice{{Text: resp.GetText(), FinishReason: resp.GetFinishReason()}}
		}
		for _, choice := range choices {
			out = append(out, answer{i*p.n + int(choice.GetIndex()), choice.GetText(), finishReason(choice.GetFinishReason())})
		}
	}
	slices.SortFunc(out, func(a, b answer) int { return a.index - b.index })
	return out, usage
}

func (s *openAIServer) chatCompletions(w http.ResponseWriter, r *http.Request, _ map[string]string) {
	var req chatRequest
	if e := decodeBody(r.Body, &req); e != nil {
		writeAPIError(w, e)
		return
	}
	p, e := translateChat(&req)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	params := openAIParams("messages", p.maxTokens)
	if p.stream {
		s.stream(w, r, p, chatChunks{}, params)
		return
	}
	responses, err := s.generateAll(r, p)
	if err != nil {
		writeAPIError(w, fromStatus(err, params))
		return
	}
	list, usage := answers(p, responses)
	completion := chatCompletion{
		ID: newID("chatcmpl-"), Object: "chat.completion", Created: s.now().Unix(), Model: p.model,
		Choices: make([]chatChoice, len(list)), Usage: usage,
	}
	for i, a := range list {
		completion.Choices[i] = chatChoice{
			Index: a.index, Message: assistantOutput{Role: "assistant", Content: a.text}, FinishReason: a.finishReason,
		}
	}
	writeJSONValue(w, completion)
}

func (s *openAIServer) completions(w http.ResponseWriter, r *http.Request, _ map[string]string) {
	var req completionRequest
	if e := decodeBody(r.Body, &req); e != nil {
		writeAPIError(w, e)
		return
	}
	p, e := translateCompletion(&req)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	params := openAIParams("prompt", p.maxTokens)
	if p.stream {
		s.stream(w, r, p, textChunks{}, params)
		return
	}
	responses, err := s.generateAll(r, p)
	if err != nil {
		writeAPIError(w, fromStatus(err, params))
		return
	}
	list, usage := answers(p, responses)
	completion := textCompletion{
		ID: newID("cmpl-"), Object: "text_completion", Created: s.now().Unix(), Model: p.model,
		Choices: make([]textChoice, len(list)), Usage: usage,
	}
	for i, a := range list {
		completion.Choices[i] = textChoice{Text: a.text, Index: a.index, FinishReason: &a.finishReason}
	}
	writeJSONValue(w, completion)
}

// generateAll runs the plan's requests at once (the engine batches them); the first failure
// cancels the rest and is the answer.
func (s *openAIServer) generateAll(r *http.Request, p *plan) ([]*llmopsv1.GenerateResponse, error) {
	ctx, bad := s.callContext(r, methodGenerate)
	if bad != nil {
		return nil, bad
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	responses := make([]*llmopsv1.GenerateResponse, len(p.requests))
	errs := make([]error, len(p.requests))
	var wg sync.WaitGroup
	for i, req := range p.requests {
		wg.Go(func() {
			responses[i], errs[i] = s.inference.Generate(ctx, req)
			if errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	for _, err := range errs { // the cause, not the calls it cancelled
		if err != nil && status.Code(err) != codes.Canceled {
			return nil, err
		}
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return responses, nil
}

// --- server-sent events -----------------------------------------------------------------------

// chunkFormat makes the choice objects of one kind of stream.
type chunkFormat interface {
	object() string
	idPrefix() string
	opening(index int) any // the first chunk of a choice, or nil
	delta(index int, text string) any
	finish(index int, reason string) any
}

type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chatChunkChoice struct {
	Index        int       `json:"index"`
	Delta        chatDelta `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type chatChunks struct{}

func (chatChunks) object() string   { return "chat.completion.chunk" }
func (chatChunks) idPrefix() string { return "chatcmpl-" }
func (chatChunks) opening(index int) any {
	empty := ""
	return chatChunkChoice{Index: index, Delta: chatDelta{Role: "assistant", Content: &empty}}
}
func (chatChunks) delta(index int, text string) any {
	return chatChunkChoice{Index: index, Delta: chatDelta{Content: &text}}
}
func (chatChunks) finish(index int, reason string) any {
	return chatChunkChoice{Index: index, FinishReason: &reason}
}

type textChunks struct{}

func (textChunks) object() string   { return "text_completion" }
func (textChunks) idPrefix() string { return "cmpl-" }
func (textChunks) opening(int) any  { return nil }
func (textChunks) delta(index int, text string) any {
	return textChoice{Text: text, Index: index}
}
func (textChunks) finish(index int, reason string) any {
	return textChoice{Index: index, FinishReason: &reason}
}

type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []any  `json:"choices"`
	Usage   any    `json:"usage,omitempty"`
}

// sseWriter writes `data: {json}` events, flushing each.
type sseWriter struct {
	w       http.ResponseWriter
	control *http.ResponseController
	base    chunk
	usage   bool // every chunk says "usage": null until the last
}

func startSSE(w http.ResponseWriter, base chunk, usage bool) *sseWriter {
	header := w.Header()
	header.Set("Content-Type", "text/event-stream")
	header.Set("Cache-Control", "no-cache")
	header.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &sseWriter{w: w, control: http.NewResponseController(w), base: base, usage: usage}
}

func (s *sseWriter) send(v any) error {
	var buf bytes.Buffer
	buf.WriteString("data: ")
	encoder := json.NewEncoder(&buf)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(v); err != nil {
		return err
	}
	buf.WriteString("\n") // Encode ended the line; a blank line ends the event
	if _, err := s.w.Write(buf.Bytes()); err != nil {
		return err
	}
	return s.control.Flush()
}

func (s *sseWriter) choice(c any) error {
	out := s.base
	out.Choices = []any{c}
	if s.usage {
		out.Usage = json.RawMessage("null")
	}
	return s.send(out)
}

func (s *sseWriter) finalUsage(usage usageJSON) error {
	out := s.base
	out.Choices = []any{}
	out.Usage = usage
	return s.send(out)
}

func (s *sseWriter) done() {
	if _, err := io.WriteString(s.w, "data: [DONE]\n\n"); err == nil {
		_ = s.control.Flush()
	}
}

// streamEvent is one message of prompt `prompt`'s stream; msg nil and err nil mark its end.
type streamEvent struct {
	prompt int
	msg    *llmopsv1.StreamGenerateResponse
	err    error
}

// openStreams starts one StreamGenerate per request; their messages arrive on one channel.
func (s *openAIServer) openStreams(ctx context.Context, requests []*llmopsv1.GenerateRequest) <-chan streamEvent {
	events := make(chan streamEvent)
	for i, req := range requests {
		go func() {
			send := func(ev streamEvent) bool {
				select {
				case events <- ev:
					return true
				case <-ctx.Done():
					return false
				}
			}
			stream, err := s.inference.StreamGenerate(ctx, &llmopsv1.StreamGenerateRequest{Request: req})
			if err != nil {
				send(streamEvent{prompt: i, err: err})
				return
			}
			for {
				msg, err := stream.Recv()
				switch {
				case errors.Is(err, io.EOF):
					send(streamEvent{prompt: i})
					return
				case err != nil:
					send(streamEvent{prompt: i, err: err})
					return
				case !send(streamEvent{prompt: i, msg: msg}):
					return
				}
			}
		}()
	}
	return events
}

// stream answers a plan as server-sent events. The response starts once every prompt's stream
// has produced its first message, so that a refused request (bad input, unknown model, a full
// queue) is a plain JSON error with its status; an error after that is one `data: {"error":
// ...}` event, and the stream ends without [DONE].
func (s *openAIServer) stream(w http.ResponseWriter, r *http.Request, p *plan, format chunkFormat, params paramMapper) {
	ctx, bad := s.callContext(r, methodStreamGenerate)
	if bad != nil {
		writeAPIError(w, bad)
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.openStreams(ctx, p.requests)
	base := chunk{ID: newID(format.idPrefix()), Object: format.object(), Created: s.now().Unix(), Model: p.model}

	var sse *sseWriter
	var pending []streamEvent
	var usage usageJSON
	seen := make([]bool, len(p.requests))
	started, finished := 0, 0
	handle := func(ev streamEvent) error {
		if ev.msg == nil {
			return nil
		}
		index := ev.prompt*p.n + int(ev.msg.GetIndex())
		if text := ev.msg.GetTextDelta(); text != "" {
			if err := sse.choice(format.delta(index, text)); err != nil {
				return err
			}
		}
		if reason := ev.msg.GetFinishReason(); reason != llmopsv1.FinishReason_FINISH_REASON_UNSPECIFIED {
			if err := sse.choice(format.finish(index, finishReason(reason))); err != nil {
				return err
			}
		}
		if ev.msg.GetUsage() != nil {
			usage.add(ev.msg.GetUsage())
		}
		return nil
	}
	for finished < len(p.requests) {
		var ev streamEvent
		select {
		case ev = <-events:
		case <-ctx.Done():
			return // the client left
		}
		if ev.err != nil {
			e := fromStatus(ev.err, params)
			if sse == nil {
				writeAPIError(w, e)
			} else {
				_ = sse.send(e.body())
			}
			return
		}
		if !seen[ev.prompt] {
			seen[ev.prompt] = true
			started++
		}
		if ev.msg == nil {
			finished++
		}
		if sse == nil {
			pending = append(pending, ev)
			if started < len(p.requests) {
				continue
			}
			sse = startSSE(w, base, p.includeUsage)
			for index := range len(p.requests) * p.n {
				if opening := format.opening(index); opening != nil {
					if sse.choice(opening) != nil {
						return
					}
				}
			}
			for _, ev := range pending {
				if handle(ev) != nil {
					return
				}
			}
			pending = nil
			continue
		}
		if handle(ev) != nil {
			return
		}
	}
	if p.includeUsage && sse.finalUsage(usage) != nil {
		return
	}
	sse.done()
}

// --- models -------------------------------------------------------------------------------------

type modelEntry struct {
	ID      string  `json:"id"`
	Object  string  `json:"object"`
	Created int64   `json:"created"`
	OwnedBy string  `json:"owned_by"`
	Parent  *string `json:"parent,omitempty"`
}

type modelList struct {
	Object string       `json:"object"`
	Data   []modelEntry `json:"data"`
}

func entry(id string, m *llmopsv1.Model, parent string) modelEntry {
	return modelEntry{ID: id, Object: "model", Created: m.GetCreateTime().GetSeconds(), OwnedBy: "llmops", Parent: nullable(parent)}
}

// listModels lists every registered model once (by name when it is its name's newest version,
// which the name resolves to, else by id), adapters with their base as `parent`, and one entry
// per alias as `name@alias`.
func (s *openAIServer) listModels(w http.ResponseWriter, r *http.Request, _ map[string]string) {
	ctx, bad := s.callContext(r, methodListModels)
	if bad != nil {
		writeAPIError(w, bad)
		return
	}
	var all []*llmopsv1.Model
	token := ""
	for {
		page, err := s.registry.ListModels(ctx, &llmopsv1.ListModelsRequest{PageSize: modelsPageSize, PageToken: token})
		if err != nil {
			writeAPIError(w, fromStatus(err, func(string) string { return "" }))
			return
		}
		all = append(all, page.GetModels()...)
		token = page.GetNextPageToken()
		if token == "" {
			break
		}
	}
	writeJSONValue(w, modelList{Object: "list", Data: modelEntries(all)})
}

// modelEntries builds the list from every registered model.
func modelEntries(all []*llmopsv1.Model) []modelEntry {
	newest := map[string]*llmopsv1.Model{}
	byID := map[string]*llmopsv1.Model{}
	for _, m := range all {
		byID[m.GetId()] = m
		if current, ok := newest[m.GetName()]; !ok || m.GetVersion() > current.GetVersion() {
			newest[m.GetName()] = m
		}
	}
	listedAs := func(m *llmopsv1.Model) string {
		if newest[m.GetName()].GetId() == m.GetId() {
			return m.GetName()
		}
		return m.GetId()
	}
	data := make([]modelEntry, 0, len(all))
	for _, m := range all {
		parent := ""
		if m.GetKind() == llmopsv1.ModelKind_MODEL_KIND_ADAPTER {
			parent = m.GetOrigin().GetBaseModel()
			if base, ok := byID[parent]; ok {
				parent = listedAs(base)
			}
		}
		data = append(data, entry(listedAs(m), m, parent))
		aliases := slices.Clone(m.GetAliases())
		slices.Sort(aliases)
		for _, alias := range aliases {
			data = append(data, entry(m.GetName()+"@"+alias, m, parent))
		}
	}
	return data
}

// getModel describes one model by any reference (id, name, name@alias); the entry's id is the
// reference as given.
func (s *openAIServer) getModel(w http.ResponseWriter, r *http.Request, path map[string]string) {
	ctx, bad := s.callContext(r, methodGetModel)
	if bad != nil {
		writeAPIError(w, bad)
		return
	}
	ref := path["id"]
	m, err := s.registry.GetModel(ctx, &llmopsv1.GetModelRequest{Model: ref})
	if err != nil {
		writeAPIError(w, fromStatus(err, func(string) string { return "model" }))
		return
	}
	parent := ""
	if m.GetKind() == llmopsv1.ModelKind_MODEL_KIND_ADAPTER {
		parent = s.parentOf(ctx, m.GetOrigin().GetBaseModel())
	}
	writeJSONValue(w, entry(ref, m, parent))
}

// parentOf names a base model as the list does: by name when the name resolves to it, else by id.
func (s *openAIServer) parentOf(ctx context.Context, baseID string) string {
	base, err := s.registry.GetModel(ctx, &llmopsv1.GetModelRequest{Model: baseID})
	if err != nil {
		return baseID
	}
	byName, err := s.registry.GetModel(ctx, &llmopsv1.GetModelRequest{Model: base.GetName()})
	if err != nil || byName.GetId() != base.GetId() {
		return baseID
	}
	return base.GetName()
}
