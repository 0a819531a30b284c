package main

// The OpenAI-compatible API's request bodies and their translation into GenerateRequests. The
// types are our own (not an OpenAI SDK's): they decode exactly the fields we serve, name the
// field that has the wrong JSON type, and ignore fields they do not know, as OpenAI clients send
// extras.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

// maxPrompts bounds the prompts of one completions request (each becomes its own Generate).
const maxPrompts = 128

// samplingFields are the sampling fields chat and text completions share.
type samplingFields struct {
	MaxTokens           *int32          `json:"max_tokens"`
	MaxCompletionTokens *int32          `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Stop                json.RawMessage `json:"stop"`
	Seed                *int64          `json:"seed"`
	N                   *int32          `json:"n"`
	Stream              *bool           `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage *bool `json:"include_usage"`
	} `json:"stream_options"`
	// Extensions (vLLM takes the same names): top-k cut and CTRL's repetition penalty.
	TopK              *int32   `json:"top_k"`
	RepetitionPenalty *float64 `json:"repetition_penalty"`

	// OpenAI fields we do not serve: a request that uses one is refused, naming it.
	PresencePenalty  *float64        `json:"presence_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	LogitBias        json.RawMessage `json:"logit_bias"`
}

// chatRequest is the body of POST /openai/v1/chat/completions.
type chatRequest struct {
	Model    *string           `json:"model"`
	Messages []json.RawMessage `json:"messages"`
	samplingFields

	Tools          json.RawMessage `json:"tools"`
	ToolChoice     json.RawMessage `json:"tool_choice"`
	Functions      json.RawMessage `json:"functions"`
	FunctionCall   json.RawMessage `json:"function_call"`
	Logprobs       *bool           `json:"logprobs"`
	TopLogprobs    json.RawMessage `json:"top_logprobs"`
	ResponseFormat json.RawMessage `json:"response_format"`
	Audio          json.RawMessage `json:"audio"`
	Modalities     json.RawMessage `json:"modalities"`
	Prediction     json.RawMessage `json:"prediction"`
	WebSearch      json.RawMessage `json:"web_search_options"`
}

// completionRequest is the body of POST /openai/v1/completions.
type completionRequest struct {
	Model  *string         `json:"model"`
	Prompt json.RawMessage `json:"prompt"`
	samplingFields

	Echo     *bool           `json:"echo"`
	Logprobs json.RawMessage `json:"logprobs"`
	Suffix   *string         `json:"suffix"`
	BestOf   *int32          `json:"best_of"`
}

// chatMessage is one entry of `messages`.
type chatMessage struct {
	Role       *string         `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCalls  json.RawMessage `json:"tool_calls"`
	ToolCallID json.RawMessage `json:"tool_call_id"`
}

// contentPart is one part of a message's content given as an array.
type contentPart struct {
	Type string  `json:"type"`
	Text *string `json:"text"`
}

// plan is a request translated: one GenerateRequest per prompt (chat has one), each with n
// answers, and what the responses must say.
type plan struct {
	model        string // as the client gave it, echoed in every response
	requests     []*llmopsv1.GenerateRequest
	n            int
	stream       bool
	includeUsage bool
	maxTokens    string // the name the client used for the token limit, for error params
}

// decodeBody reads a JSON object into v. Type errors name the field (as OpenAI's `param`).
func decodeBody(body io.Reader, v any) *apiError {
	data, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return bodyTooLarge(tooBig.Limit)
		}
		return invalidRequest("", "could not read the request body: %v", err)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return invalidRequest("", "the request body must be a JSON object")
	}
	// encoding/json would quietly turn bytes that are not UTF-8 into U+FFFD: refuse them, as
	// the REST routes (protojson) do, rather than generate from a prompt the caller did not send.
	if !utf8.Valid(trimmed) {
		return invalidRequest("", "the request body is not valid UTF-8")
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			field := strings.TrimPrefix(typeErr.Field, "samplingFields.") // the embedded struct
			return invalidRequest(field, "%s must be %s, not a JSON %s", field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
		}
		return invalidRequest("", "we could not parse the JSON body of the request: %v", err)
	}
	return nil
}

func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"):
		return "an integer"
	case strings.HasPrefix(goKind, "float"):
		return "a number"
	case goKind == "string":
		return "a string"
	case goKind == "bool":
		return "a boolean"
	case goKind == "slice":
		return "an array"
	}
	return "an object"
}

// given says whether a raw JSON field was sent with a value other than null.
func given(raw json.RawMessage) bool {
	return len(raw) > 0 && string(bytes.TrimSpace(raw)) != "null"
}

func unsupported(param, what string) *apiError {
	return invalidRequest(param, "%s is not supported by this server%s", param, what)
}

// translateSampling checks the shared fields and fills the request's SamplingParams.
func (f *samplingFields) translate() (*llmopsv1.SamplingParams, string, *apiError) {
	sampling := &llmopsv1.SamplingParams{}
	maxName := "max_tokens"
	limit := f.MaxTokens
	if f.MaxCompletionTokens != nil {
		maxName, limit = "max_completion_tokens", f.MaxCompletionTokens
	}
	if limit != nil {
		if *limit < 1 {
			return nil, maxName, invalidRequest(maxName, "%s must be at least 1", maxName)
		}
		sampling.MaxNewTokens = *limit
	}
	if f.Temperature != nil {
		sampling.Temperature = *f.Temperature
	}
	if f.TopP != nil {
		if *f.TopP <= 0 || *f.TopP > 1 {
			return nil, maxName, invalidRequest("top_p", "top_p must be in (0, 1]")
		}
		sampling.TopP = *f.TopP
	}
	if f.TopK != nil {
		sampling.TopK = *f.TopK
	}
	if f.RepetitionPenalty != nil {
		if *f.RepetitionPenalty <= 0 {
			return nil, maxName, invalidRequest("repetition_penalty", "repetition_penalty must be greater than 0")
		}
		sampling.RepetitionPenalty = *f.RepetitionPenalty
	}
	if f.Seed != nil {
		sampling.Seed = *f.Seed
	}
	if f.N != nil {
		if *f.N < 1 {
			return nil, maxName, invalidRequest("n", "n must be at least 1")
		}
		sampling.N = *f.N
	}
	stops, err := stopStrings(f.Stop)
	if err != nil {
		return nil, maxName, err
	}
	sampling.Stop = stops
	switch {
	case f.PresencePenalty != nil && *f.PresencePenalty != 0:
		return nil, maxName, unsupported("presence_penalty", " (repetition_penalty is)")
	case f.FrequencyPenalty != nil && *f.FrequencyPenalty != 0:
		return nil, maxName, unsupported("frequency_penalty", " (repetition_penalty is)")
	case given(f.LogitBias) && string(bytes.TrimSpace(f.LogitBias)) != "{}":
		return nil, maxName, unsupported("logit_bias", "")
	}
	return sampling, maxName, nil
}

// stopStrings reads `stop`: a string, an array of strings, or null.
func stopStrings(raw json.RawMessage) ([]string, *apiError) {
	if !given(raw) {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err == nil {
		return many, nil
	}
	return nil, invalidRequest("stop", "stop must be a string or an array of strings")
}

func (f *samplingFields) streaming() (bool, bool) {
	stream := f.Stream != nil && *f.Stream
	usage := stream && f.StreamOptions != nil && f.StreamOptions.IncludeUsage != nil && *f.StreamOptions.IncludeUsage
	return stream, usage
}

func requiredModel(model *string) (string, *apiError) {
	if model == nil || *model == "" {
		return "", invalidRequest("model", "you must provide a model parameter")
	}
	return *model, nil
}

// translateChat turns a chat completions request into one GenerateRequest with messages.
func translateChat(req *chatRequest) (*plan, *apiError) {
	model, bad := requiredModel(req.Model)
	if bad != nil {
		return nil, bad
	}
	switch {
	case given(req.Tools):
		return nil, unsupported("tools", ": this server has no tool calling")
	case given(req.ToolChoice):
		return nil, unsupported("tool_choice", ": this server has no tool calling")
	case given(req.Functions):
		return nil, unsupported("functions", ": this server has no function calling")
	case given(req.FunctionCall):
		return nil, unsupported("function_call", ": this server has no function calling")
	case req.Logprobs != nil && *req.Logprobs:
		return nil, unsupported("logprobs", "")
	case given(req.TopLogprobs):
		return nil, unsupported("top_logprobs", "")
	case given(req.Audio):
		return nil, unsupported("audio", "")
	case given(req.Prediction):
		return nil, unsupported("prediction", "")
	case given(req.WebSearch):
		return nil, unsupported("web_search_options", "")
	}
	if given(req.ResponseFormat) {
		var format struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(req.ResponseFormat, &format); err != nil || format.Type != "text" {
			return nil, unsupported("response_format", ` other than {"type": "text"}`)
		}
	}
	if given(req.Modalities) {
		var modalities []string
		if err := json.Unmarshal(req.Modalities, &modalities); err != nil || len(modalities) != 1 || modalities[0] != "text" {
			return nil, unsupported("modalities", ` other than ["text"]`)
		}
	}
	if len(req.Messages) == 0 {
		return nil, invalidRequest("messages", "messages must be a non-empty array")
	}
	messages := make([]*llmopsv1.ChatMessage, 0, len(req.Messages))
	for i, raw := range req.Messages {
		message, bad := translateMessage(i, raw)
		if bad != nil {
			return nil, bad
		}
		messages = append(messages, message)
	}
	sampling, maxName, bad := req.translate()
	if bad != nil {
		return nil, bad
	}
	stream, usage := req.streaming()
	return &plan{
		model:        model,
		requests:     []*llmopsv1.GenerateRequest{{Model: model, Messages: messages, Sampling: sampling}},
		n:            max(int(sampling.GetN()), 1),
		stream:       stream,
		includeUsage: usage,
		maxTokens:    maxName,
	}, nil
}

// translateMessage reads one chat message: a role and text content (a string, or an array of
// text parts, concatenated). `developer` is OpenAI's newer name for `system`.
func translateMessage(i int, raw json.RawMessage) (*llmopsv1.ChatMessage, *apiError) {
	field := fmt.Sprintf("messages[%d]", i)
	var message chatMessage
	if err := json.Unmarshal(raw, &message); err != nil {
		return nil, invalidRequest(field, "%s must be an object with a role and content", field)
	}
	if message.Role == nil || *message.Role == "" {
		return nil, invalidRequest(field+".role", "%s.role is required", field)
	}
	role := *message.Role
	if role == "developer" {
		role = "system"
	}
	if role == "tool" || role == "function" {
		return nil, unsupported(field+".role", fmt.Sprintf(" as %q: this server has no tool calling", role))
	}
	if given(message.ToolCalls) {
		return nil, unsupported(field+".tool_calls", ": this server has no tool calling")
	}
	if !given(message.Content) {
		return nil, invalidRequest(field+".content", "%s.content is required", field)
	}
	var text string
	if err := json.Unmarshal(message.Content, &text); err != nil {
		var parts []json.RawMessage
		if err := json.Unmarshal(message.Content, &parts); err != nil {
			return nil, invalidRequest(field+".content", "%s.content must be a string or an array of text parts", field)
		}
		var joined strings.Builder
		for j, rawPart := range parts {
			partField := fmt.Sprintf("%s.content[%d]", field, j)
			var part contentPart
			if err := json.Unmarshal(rawPart, &part); err != nil {
				return nil, invalidRequest(partField, "%s must be an object", partField)
			}
			if part.Type != "text" {
				return nil, unsupported(partField+".type", fmt.Sprintf(" as %q: only text parts are", part.Type))
			}
			if part.Text == nil {
				return nil, invalidRequest(partField+".text", "%s.text is required", partField)
			}
			joined.WriteString(*part.Text)
		}
		text = joined.String()
	}
	return &llmopsv1.ChatMessage{Role: role, Content: text}, nil
}

// translateCompletion turns a completions request into one GenerateRequest per prompt.
func translateCompletion(req *completionRequest) (*plan, *apiError) {
	model, bad := requiredModel(req.Model)
	if bad != nil {
		return nil, bad
	}
	switch {
	case req.Echo != nil && *req.Echo:
		return nil, unsupported("echo", "")
	case given(req.Logprobs):
		return nil, unsupported("logprobs", "")
	case req.Suffix != nil && *req.Suffix != "":
		return nil, unsupported("suffix", "")
	case req.BestOf != nil && *req.BestOf > 1:
		return nil, unsupported("best_of", " above 1")
	}
	prompts, bad := promptStrings(req.Prompt)
	if bad != nil {
		return nil, bad
	}
	sampling, maxName, bad := req.translate()
	if bad != nil {
		return nil, bad
	}
	requests := make([]*llmopsv1.GenerateRequest, len(prompts))
	for i, prompt := range prompts {
		requests[i] = &llmopsv1.GenerateRequest{Model: model, Prompt: prompt, Sampling: sampling}
	}
	stream, usage := req.streaming()
	return &plan{
		model:        model,
		requests:     requests,
		n:            max(int(sampling.GetN()), 1),
		stream:       stream,
		includeUsage: usage,
		maxTokens:    maxName,
	}, nil
}

// promptStrings reads `prompt`: a string or a non-empty array of strings (token ids are not
// served).
func promptStrings(raw json.RawMessage) ([]string, *apiError) {
	if !given(raw) {
		return nil, invalidRequest("prompt", "you must provide a prompt")
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, invalidRequest("prompt", "prompt must be a string or an array of strings (token ids are not supported)")
	}
	if len(many) == 0 || len(many) > maxPrompts {
		return nil, invalidRequest("prompt", "prompt must have 1 to %d strings", maxPrompts)
	}
	return many, nil
}
