package main

// Files of the OpenAI-compatible fine-tuning API: a `purpose=fine-tune` JSONL upload becomes a
// Registry dataset (its id is the file's id), streamed through UploadDataset in chunks. Chat rows
// (`{"messages": [...]}`) make an `sft` dataset as they are; OpenAI's preference rows (`{"input":
// {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}`) are converted
// to the platform's `{"prompt", "chosen", "rejected"}` and make a `preference` dataset.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

const (
	methodUploadDataset = "/llmops.v1.RegistryService/UploadDataset"
	methodGetDataset    = "/llmops.v1.RegistryService/GetDataset"
	methodListDatasets  = "/llmops.v1.RegistryService/ListDatasets"
	uploadChunkBytes    = 1 << 20
	datasetsPageSize    = 1000
	// filePrefix starts the description of a dataset uploaded as an OpenAI file; the file name
	// follows it.
	filePrefix = "OpenAI file: "
)

type fileObject struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
}

type listObject struct {
	Object  string  `json:"object"`
	Data    any     `json:"data"`
	HasMore bool    `json:"has_more"`
	FirstID *string `json:"first_id,omitempty"`
	LastID  *string `json:"last_id,omitempty"`
}

// fileOf describes a dataset as an OpenAI file: the uploaded file's name when it came through
// /openai/v1/files, else the dataset's name.
func fileOf(d *llmopsv1.Dataset) fileObject {
	filename := d.GetName()
	if name, ok := strings.CutPrefix(d.GetDescription(), filePrefix); ok && name != "" {
		filename = name
	}
	return fileObject{
		ID: d.GetId(), Object: "file", Bytes: d.GetSizeBytes(), CreatedAt: d.GetCreateTime().GetSeconds(),
		Filename: filename, Purpose: "fine-tune", Status: "processed",
	}
}

// --- rows -----------------------------------------------------------------------------------------

type rowMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type openAIPreferenceRow struct {
	Input struct {
		Messages []rowMessage `json:"messages"`
	} `json:"input"`
	Preferred    []rowMessage `json:"preferred_output"`
	NonPreferred []rowMessage `json:"non_preferred_output"`
}

type platformPreferenceRow struct {
	Prompt   string `json:"prompt"`
	Chosen   string `json:"chosen"`
	Rejected string `json:"rejected"`
}

// rowFormat is what the first row of a file says the file holds.
type rowFormat int

const (
	formatSFT              rowFormat = iota // chat or prompt/completion rows, sent as they are
	formatPreference                        // the platform's prompt/chosen/rejected rows
	formatOpenAIPreference                  // OpenAI's DPO rows, converted
)

func (f rowFormat) kind() llmopsv1.DatasetKind {
	if f == formatSFT {
		return llmopsv1.DatasetKind_DATASET_KIND_SFT
	}
	return llmopsv1.DatasetKind_DATASET_KIND_PREFERENCE
}

// formatOf classifies a file by its first row; anything that is not a preference row is taken as
// SFT, which the Registry validates row by row.
func formatOf(line []byte) rowFormat {
	var row map[string]json.RawMessage
	if json.Unmarshal(line, &row) != nil {
		return formatSFT
	}
	if _, ok := row["preferred_output"]; ok {
		return formatOpenAIPreference
	}
	if _, ok := row["input"]; ok {
		return formatOpenAIPreference
	}
	if _, ok := row["chosen"]; ok {
		return formatPreference
	}
	return formatSFT
}

// textOf is a message's content as text: a string, or text parts joined without a separator.
func textOf(content json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(content, &s) == nil {
		return s, true
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(content, &parts) != nil {
		return "", false
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", false
		}
		b.WriteString(p.Text)
	}
	return b.String(), true
}

// soleMessage is the content of a list holding one message of the role.
func soleMessage(messages []rowMessage, role string) (string, bool) {
	if len(messages) != 1 || messages[0].Role != role {
		return "", false
	}
	return textOf(messages[0].Content)
}

// convertPreference turns one of OpenAI's DPO rows into the platform's. Only what converts
// without a chat template does: one user message as the input, one assistant message on each
// side. Line numbers are 1-based.
func convertPreference(line []byte, number int) ([]byte, error) {
	var row openAIPreferenceRow
	if err := json.Unmarshal(line, &row); err != nil {
		return nil, fmt.Errorf("line %d: not an OpenAI preference row: %v", number, err)
	}
	prompt, ok := soleMessage(row.Input.Messages, "user")
	if !ok {
		return nil, fmt.Errorf("line %d, input.messages: must be exactly one user message with text content (multi-turn and system messages are not supported)", number)
	}
	chosen, ok := soleMessage(row.Preferred, "assistant")
	if !ok {
		return nil, fmt.Errorf("line %d, preferred_output: must be exactly one assistant message with text content", number)
	}
	rejected, ok := soleMessage(row.NonPreferred, "assistant")
	if !ok {
		return nil, fmt.Errorf("line %d, non_preferred_output: must be exactly one assistant message with text content", number)
	}
	var buf bytes.Buffer
	encoder := json.NewEncoder(&buf)
	encoder.SetEscapeHTML(false)
	_ = encoder.Encode(platformPreferenceRow{Prompt: prompt, Chosen: chosen, Rejected: rejected})
	return buf.Bytes(), nil
}

// --- the upload -----------------------------------------------------------------------------------

// filePart finds the multipart `file` part, reading the form fields before it; `purpose` must
// be `fine-tune`. The parts after the file are not read.
func filePart(r *http.Request) (*multipart.Part, *apiError) {
	reader, err := r.MultipartReader()
	if err != nil {
		return nil, invalidRequest("file", "expected a multipart/form-data body with `file` and `purpose`: %v", err)
	}
	purpose := ""
	for {
		part, err := reader.NextPart()
		if errors.Is(err, io.EOF) {
			return nil, invalidRequest("file", "missing required parameter `file`")
		}
		if err != nil {
			return nil, invalidRequest("file", "malformed multipart body: %v", err)
		}
		switch part.FormName() {
		case "purpose":
			value, _ := io.ReadAll(io.LimitReader(part, 256))
			purpose = strings.TrimSpace(string(value))
		case "file":
			switch {
			case purpose == "":
				return nil, invalidRequest("purpose", "missing required parameter `purpose` (send it before `file`)")
			case purpose != "fine-tune":
				return nil, invalidRequest("purpose", "purpose %q is not supported: only \"fine-tune\" files are accepted", purpose)
			case part.FileName() == "":
				return nil, invalidRequest("file", "`file` must be a file part with a file name")
			}
			return part, nil
		}
	}
}

// uploadLines streams the file's lines to UploadDataset: the metadata first, then chunks of
// about uploadChunkBytes, converting OpenAI preference rows on the way.
func (s *openAIServer) uploadLines(r *http.Request, body io.Reader, filename string) (*llmopsv1.Dataset, *apiError) {
	lines := bufio.NewReaderSize(body, 64<<10)
	// Blank lines before the first row are sent as they are, so that the Registry's line
	// numbers are the file's.
	var first, blank []byte
	number := 0
	for len(bytes.TrimSpace(first)) == 0 {
		blank = append(blank, first...)
		line, err := lines.ReadBytes('\n')
		first = line
		number++
		if err != nil {
			if errors.Is(err, io.EOF) && len(bytes.TrimSpace(line)) > 0 {
				break
			}
			if errors.Is(err, io.EOF) {
				return nil, invalidRequest("file", "the file is empty")
			}
			return nil, readError(r, err)
		}
	}
	format := formatOf(first)
	ctx, bad := s.callContext(r, methodUploadDataset)
	if bad != nil {
		return nil, bad
	}
	stream, err := s.registry.UploadDataset(ctx)
	if err != nil {
		return nil, uploadRefused(err)
	}
	send := func(req *llmopsv1.UploadDatasetRequest) *apiError {
		if err := stream.Send(req); err != nil {
			_, err = stream.CloseAndRecv() // the service's reason
			return uploadRefused(err)
		}
		return nil
	}
	metadata := &llmopsv1.DatasetUploadMetadata{Kind: format.kind(), Description: filePrefix + filename}
	if e := send(&llmopsv1.UploadDatasetRequest{Payload: &llmopsv1.UploadDatasetRequest_Metadata{Metadata: metadata}}); e != nil {
		return nil, e
	}
	chunk := blank
	flush := func() *apiError {
		if len(chunk) == 0 {
			return nil
		}
		e := send(&llmopsv1.UploadDatasetRequest{Payload: &llmopsv1.UploadDatasetRequest_Chunk{Chunk: chunk}})
		chunk = nil
		return e
	}
	line := first
	for {
		if format == formatOpenAIPreference && len(bytes.TrimSpace(line)) > 0 {
			converted, err := convertPreference(line, number)
			if err != nil {
				return nil, invalidRequest("file", "%v", err)
			}
			line = converted
		}
		chunk = append(chunk, line...)
		if len(chunk) >= uploadChunkBytes {
			if e := flush(); e != nil {
				return nil, e
			}
		}
		var err error
		line, err = lines.ReadBytes('\n')
		number++
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				break
			}
		} else if err != nil {
			return nil, readError(r, err)
		}
	}
	if e := flush(); e != nil {
		return nil, e
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, uploadRefused(err)
	}
	return resp.GetDataset(), nil
}

// readError is a failed read of the request body: over the limit, or cut off.
func readError(r *http.Request, err error) *apiError {
	if body, ok := r.Body.(*limitedBody); ok && body.exceeded {
		return bodyTooLarge(body.limit)
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return bodyTooLarge(tooBig.Limit)
	}
	return invalidRequest("file", "reading the file: %v", err)
}

// fileParams names the request field an upload's refusal is about: always the file, since its
// rows are what the Registry checks (the message names each bad line and field).
func fileParams(field string) string {
	if field == "" {
		return ""
	}
	return "file"
}

// uploadRefused is a refused upload in OpenAI's shape; a refusal of the rows (INVALID_ARGUMENT
// with field violations such as `lines[3].messages`) lists every violation in the message.
func uploadRefused(err error) *apiError {
	e := fromStatus(err, fileParams)
	st := status.Convert(err)
	var listed []string
	for _, detail := range st.Details() {
		if d, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range d.GetFieldViolations() {
				listed = append(listed, v.GetField()+": "+v.GetDescription())
			}
		}
	}
	if len(listed) > 0 {
		e.Message += ": " + strings.Join(listed, "; ")
	}
	return e
}

func (s *openAIServer) createFile(w http.ResponseWriter, r *http.Request, _ map[string]string) {
	part, e := filePart(r)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	dataset, e := s.uploadLines(r, part, part.FileName())
	if e != nil {
		writeAPIError(w, e)
		return
	}
	writeJSONValue(w, fileOf(dataset))
}

func (s *openAIServer) getFile(w http.ResponseWriter, r *http.Request, path map[string]string) {
	ctx, bad := s.callContext(r, methodGetDataset)
	if bad != nil {
		writeAPIError(w, bad)
		return
	}
	dataset, err := s.registry.GetDataset(ctx, &llmopsv1.GetDatasetRequest{Dataset: path["id"]})
	if err != nil {
		writeAPIError(w, fromStatus(err, func(string) string { return "file_id" }))
		return
	}
	if dataset.GetKind() == llmopsv1.DatasetKind_DATASET_KIND_EVAL {
		writeAPIError(w, &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Param: "file_id",
			Message: fmt.Sprintf("no fine-tune file %q (it is an eval dataset)", path["id"])})
		return
	}
	writeJSONValue(w, fileOf(dataset))
}

// listFiles lists the sft and preference datasets, newest first (eval datasets are not
// fine-tune files).
func (s *openAIServer) listFiles(w http.ResponseWriter, r *http.Request, _ map[string]string) {
	if purpose := r.URL.Query().Get("purpose"); purpose != "" && purpose != "fine-tune" {
		writeJSONValue(w, listObject{Object: "list", Data: []fileObject{}})
		return
	}
	ctx, bad := s.callContext(r, methodListDatasets)
	if bad != nil {
		writeAPIError(w, bad)
		return
	}
	files := []fileObject{}
	token := ""
	for {
		page, err := s.registry.ListDatasets(ctx, &llmopsv1.ListDatasetsRequest{PageSize: datasetsPageSize, PageToken: token})
		if err != nil {
			writeAPIError(w, fromStatus(err, func(string) string { return "" }))
			return
		}
		for _, d := range page.GetDatasets() {
			if d.GetKind() != llmopsv1.DatasetKind_DATASET_KIND_EVAL {
				files = append(files, fileOf(d))
			}
		}
		token = page.GetNextPageToken()
		if token == "" {
			break
		}
	}
	writeJSONValue(w, listObject{Object: "list", Data: files})
}
