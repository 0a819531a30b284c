package main

// Fine-tuning jobs of the OpenAI-compatible API, over the Training service: create (supervised
// → SFT, dpo → DPO), list, retrieve, cancel, pause, resume, events and checkpoints, each answered
// as OpenAI's objects (`fine_tuning.job`, `fine_tuning.job.event`, `fine_tuning.job.checkpoint`).

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

const (
	methodCreateJob      = "/llmops.v1.TrainingService/CreateTrainingJob"
	methodGetJob         = "/llmops.v1.TrainingService/GetTrainingJob"
	methodListJobs       = "/llmops.v1.TrainingService/ListTrainingJobs"
	methodCancelJob      = "/llmops.v1.TrainingService/CancelTrainingJob"
	methodPauseJob       = "/llmops.v1.TrainingService/PauseTrainingJob"
	methodResumeJob      = "/llmops.v1.TrainingService/ResumeTrainingJob"
	methodJobEvents      = "/llmops.v1.TrainingService/ListTrainingJobEvents"
	methodJobCheckpoints = "/llmops.v1.TrainingService/ListTrainingJobCheckpoints"
	jobsPageSize         = 1000
	organizationID       = "llmops"
	largeModelBytes      = 1 << 30
)

// defaultLearningRates are the platform's default learning rates by method
// (clients/python/llmops/training_defaults.py) for base models under 1 GiB of weights, and the
// auto rule's rates above that (services/llmops_services/training/hyperparameters.py);
// learning_rate_multiplier scales them.
var defaultLearningRates = map[llmopsv1.TrainingMethod][2]float64{
	llmopsv1.TrainingMethod_TRAINING_METHOD_SFT:     {3e-3, 2e-4},
	llmopsv1.TrainingMethod_TRAINING_METHOD_QLORA:   {3e-3, 2e-4},
	llmopsv1.TrainingMethod_TRAINING_METHOD_DPO:     {2e-3, 5e-6},
	llmopsv1.TrainingMethod_TRAINING_METHOD_DISTILL: {2e-3, 2e-4},
}

func defaultLearningRate(method llmopsv1.TrainingMethod, modelBytes int64) float64 {
	rates, ok := defaultLearningRates[method]
	if !ok {
		return 0
	}
	if modelBytes >= largeModelBytes {
		return rates[1]
	}
	return rates[0]
}

// --- the request ----------------------------------------------------------------------------------

// hyperparameterNames maps OpenAI's hyperparameter names to the platform's; any other name is
// taken as a platform hyperparameter (an extension: `max_steps`, `lora_r`, ...).
var hyperparameterNames = map[string]string{
	"n_epochs":   "num_train_epochs",
	"batch_size": "per_device_train_batch_size",
	"beta":       "beta",
}

type methodSpec struct {
	Type       string `json:"type"`
	Supervised *struct {
		Hyperparameters map[string]json.RawMessage `json:"hyperparameters"`
	} `json:"supervised"`
	DPO *struct {
		Hyperparameters map[string]json.RawMessage `json:"hyperparameters"`
	} `json:"dpo"`
}

type fineTuneRequest struct {
	Model           string                     `json:"model"`
	TrainingFile    string                     `json:"training_file"`
	ValidationFile  *string                    `json:"validation_file"`
	Suffix          *string                    `json:"suffix"`
	Seed            *int64                     `json:"seed"`
	Metadata        map[string]string          `json:"metadata"`
	Method          *methodSpec                `json:"method"`
	Hyperparameters map[string]json.RawMessage `json:"hyperparameters"`
	Integrations    []json.RawMessage          `json:"integrations"`
}

// jobPlan is a translated create request: the gRPC request, and the learning-rate multiplier
// still to be scaled by the base model's default rate (nil: auto).
type jobPlan struct {
	req        *llmopsv1.CreateTrainingJobRequest
	multiplier *float64
	suffix     string
}

// translateFineTune turns an OpenAI create request into the platform's.
func translateFineTune(req *fineTuneRequest, idempotencyKey string) (*jobPlan, *apiError) {
	if req.Model == "" {
		return nil, invalidRequest("model", "missing required parameter `model`")
	}
	if req.TrainingFile == "" {
		return nil, invalidRequest("training_file", "missing required parameter `training_file`")
	}
	if len(req.Integrations) > 0 {
		return nil, invalidRequest("integrations", "integrations are not supported")
	}
	out := &llmopsv1.CreateTrainingJobRequest{
		Method: llmopsv1.TrainingMethod_TRAINING_METHOD_SFT, BaseModel: req.Model, Dataset: req.TrainingFile,
		IdempotencyKey: idempotencyKey,
	}
	if req.ValidationFile != nil {
		out.ValidationDataset = *req.ValidationFile
	}
	// The legacy top-level hyperparameters and the method's are merged, the method's winning.
	given, param := maps.Clone(req.Hyperparameters), "hyperparameters"
	if given == nil {
		given = map[string]json.RawMessage{}
	}
	if m := req.Method; m != nil {
		switch m.Type {
		case "supervised":
			if m.Supervised != nil && m.Supervised.Hyperparameters != nil {
				maps.Copy(given, m.Supervised.Hyperparameters)
				param = "method.supervised.hyperparameters"
			}
		case "dpo":
			out.Method = llmopsv1.TrainingMethod_TRAINING_METHOD_DPO
			if m.DPO != nil && m.DPO.Hyperparameters != nil {
				maps.Copy(given, m.DPO.Hyperparameters)
				param = "method.dpo.hyperparameters"
			}
		default:
			return nil, invalidRequest("method.type", "method type %q is not supported: use \"supervised\" or \"dpo\"", m.Type)
		}
	}
	platform := map[string]json.RawMessage{}
	var multiplier *float64
	for name, raw := range given {
		if string(raw) == `"auto"` || string(raw) == "null" {
			continue
		}
		if name == "learning_rate_multiplier" {
			var value float64
			if json.Unmarshal(raw, &value) != nil || value <= 0 {
				return nil, invalidRequest(param+"."+name, "learning_rate_multiplier must be \"auto\" or a number > 0")
			}
			multiplier = &value
			continue
		}
		if name == "beta" && out.Method != llmopsv1.TrainingMethod_TRAINING_METHOD_DPO {
			return nil, invalidRequest(param+"."+name, "beta applies to dpo only")
		}
		target := name
		if mapped, ok := hyperparameterNames[name]; ok {
			target = mapped
		}
		platform[target] = raw
	}
	if _, ok := platform["learning_rate"]; ok && multiplier != nil {
		return nil, invalidRequest(param+".learning_rate", "give learning_rate_multiplier or learning_rate, not both")
	}
	if req.Seed != nil {
		platform["seed"] = json.RawMessage(strconv.FormatInt(*req.Seed, 10))
	}
	encoded, _ := json.Marshal(platform)
	hyperparameters := &llmopsv1.Hyperparameters{}
	if err := protojson.Unmarshal(encoded, hyperparameters); err != nil {
		return nil, invalidRequest(param, "invalid hyperparameters: %s", strings.ReplaceAll(err.Error(), "\u00a0", " "))
	}
	out.Hyperparameters = hyperparameters
	plan := &jobPlan{req: out, multiplier: multiplier}
	if req.Suffix != nil {
		plan.suffix = *req.Suffix
	}
	return plan, nil
}

// jobParams names the OpenAI field a CreateTrainingJob violation is about.
func jobParams(field string) string {
	switch {
	case field == "":
		return ""
	case field == "base_model":
		return "model"
	case field == "dataset":
		return "training_file"
	case field == "validation_dataset":
		return "validation_file"
	case field == "output_name":
		return "suffix"
	case field == "hyperparameters.seed":
		return "seed"
	case strings.HasPrefix(field, "hyperparameters."):
		name := strings.TrimPrefix(field, "hyperparameters.")
		for openai, platform := range hyperparameterNames {
			if platform == name {
				name = openai
			}
		}
		if name == "learning_rate" {
			name = "learning_rate_multiplier"
		}
		return "hyperparameters." + name
	}
	return field
}

// --- the answer -----------------------------------------------------------------------------------

type jobError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
}

type jobMethod struct {
	Type       string         `json:"type"`
	Supervised map[string]any `json:"supervised,omitempty"`
	DPO        map[string]any `json:"dpo,omitempty"`
}

type fineTuningJob struct {
	ID              string         `json:"id"`
	Object          string         `json:"object"`
	Model           string         `json:"model"`
	CreatedAt       int64          `json:"created_at"`
	FinishedAt      *int64         `json:"finished_at"`
	FineTunedModel  *string        `json:"fine_tuned_model"`
	OrganizationID  string         `json:"organization_id"`
	ResultFiles     []string       `json:"result_files"`
	Status          string         `json:"status"`
	TrainingFile    string         `json:"training_file"`
	ValidationFile  *string        `json:"validation_file"`
	Hyperparameters map[string]any `json:"hyperparameters"`
	TrainedTokens   *int64         `json:"trained_tokens"`
	Error           *jobError      `json:"error"`
	Seed            int64          `json:"seed"`
	Method          jobMethod      `json:"method"`
	Metadata        *struct{}      `json:"metadata"`
	EstimatedFinish *int64         `json:"estimated_finish"`
	Integrations    []any          `json:"integrations"`
	// Extensions: the platform's own view of the job.
	PlatformMethod string             `json:"llmops_method"`
	Progress       *jobProgressJSON   `json:"llmops_progress,omitempty"`
	Metrics        map[string]float64 `json:"llmops_metrics,omitempty"`
}

type jobProgressJSON struct {
	Step       int64 `json:"step"`
	TotalSteps int64 `json:"total_steps"`
}

// jobStatus maps the platform's job states to OpenAI's.
func jobStatus(state llmopsv1.JobState) string {
	switch state {
	case llmopsv1.JobState_JOB_STATE_QUEUED:
		return "queued"
	case llmopsv1.JobState_JOB_STATE_RUNNING:
		return "running"
	case llmopsv1.JobState_JOB_STATE_SUCCEEDED:
		return "succeeded"
	case llmopsv1.JobState_JOB_STATE_FAILED:
		return "failed"
	case llmopsv1.JobState_JOB_STATE_CANCELLING, llmopsv1.JobState_JOB_STATE_CANCELLED:
		return "cancelled"
	case llmopsv1.JobState_JOB_STATE_PAUSED:
		return "paused"
	}
	return "queued"
}

func methodName(m llmopsv1.TrainingMethod) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "TRAINING_METHOD_"))
}

// openAIHyperparameters are the values the job uses (resolved, once the service has filled the
// auto ones in), in OpenAI's names; `n_epochs` is "auto" when the job runs by `max_steps`, which
// is given too (an extension).
func openAIHyperparameters(job *llmopsv1.TrainingJob, baseRate float64) map[string]any {
	h := job.GetResolvedHyperparameters()
	if h == nil {
		h = job.GetHyperparameters()
	}
	if h == nil {
		h = &llmopsv1.Hyperparameters{}
	}
	out := map[string]any{"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
	if h.NumTrainEpochs != nil {
		epochs := h.GetNumTrainEpochs()
		if epochs == math.Trunc(epochs) {
			out["n_epochs"] = int64(epochs)
		} else {
			out["n_epochs"] = epochs
		}
	}
	if h.MaxSteps != nil {
		out["max_steps"] = h.GetMaxSteps()
	}
	if h.PerDeviceTrainBatchSize != nil {
		out["batch_size"] = h.GetPerDeviceTrainBatchSize()
	}
	if h.LearningRate != nil && baseRate > 0 {
		out["learning_rate_multiplier"] = roundSignificant(h.GetLearningRate() / baseRate)
	}
	if job.GetMethod() == llmopsv1.TrainingMethod_TRAINING_METHOD_DPO {
		out["beta"] = "auto"
		if h.Beta != nil {
			out["beta"] = h.GetBeta()
		}
	}
	return out
}

// roundSignificant drops the float noise of a division (0.1/3e-3*3e-3) at 12 significant digits.
func roundSignificant(v float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 12, 64), 64)
	return f
}

// jobOf renders a job as OpenAI's `fine_tuning.job`. `model` is the base model's id (the service
// resolves the reference at creation); baseRate is its default learning rate.
func jobOf(job *llmopsv1.TrainingJob, baseRate float64) fineTuningJob {
	out := fineTuningJob{
		ID: job.GetId(), Object: "fine_tuning.job", Model: job.GetBaseModel(),
		CreatedAt: job.GetCreateTime().GetSeconds(), OrganizationID: organizationID,
		ResultFiles: []string{}, Status: jobStatus(job.GetState()), TrainingFile: job.GetDataset(),
		ValidationFile: nullable(job.GetValidationDataset()), Integrations: []any{},
		PlatformMethod: methodName(job.GetMethod()), Metrics: job.GetMetrics(),
	}
	if job.GetEndTime() != nil {
		finished := job.GetEndTime().GetSeconds()
		out.FinishedAt = &finished
	}
	if job.GetState() == llmopsv1.JobState_JOB_STATE_SUCCEEDED {
		out.FineTunedModel = nullable(job.GetResultModel())
	}
	if e := job.GetError(); e != nil && job.GetState() == llmopsv1.JobState_JOB_STATE_FAILED {
		out.Error = &jobError{Code: strings.ToLower(codeName(e.GetCode())), Message: e.GetMessage()}
	}
	resolved := job.GetResolvedHyperparameters()
	if resolved == nil {
		resolved = job.GetHyperparameters()
	}
	out.Seed = resolved.GetSeed()
	out.Hyperparameters = openAIHyperparameters(job, baseRate)
	if job.GetMethod() == llmopsv1.TrainingMethod_TRAINING_METHOD_DPO {
		out.Method = jobMethod{Type: "dpo", DPO: map[string]any{"hyperparameters": out.Hyperparameters}}
	} else {
		out.Method = jobMethod{Type: "supervised", Supervised: map[string]any{"hyperparameters": out.Hyperparameters}}
	}
	for _, name := range []string{"num_tokens", "num_input_tokens_seen"} { // TRL's count, then the Trainer's
		if tokens, ok := job.GetMetrics()[name]; ok {
			trained := int64(tokens)
			out.TrainedTokens = &trained
			break
		}
	}
	if p := job.GetProgress(); p != nil {
		out.Progress = &jobProgressJSON{Step: p.GetStep(), TotalSteps: p.GetTotalSteps()}
	}
	return out
}

func codeName(code int32) string {
	names := []string{"ok", "cancelled", "unknown", "invalid_argument", "deadline_exceeded", "not_found",
		"already_exists", "permission_denied", "resource_exhausted", "failed_precondition", "aborted",
		"out_of_range", "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated"}
	if code >= 0 && int(code) < len(names) {
		return names[code]
	}
	return "unknown"
}

type eventObject struct {
	ID        string         `json:"id"`
	Object    string         `json:"object"`
	CreatedAt int64          `json:"created_at"`
	Level     string         `json:"level"`
	Message   string         `json:"message"`
	Type      string         `json:"type"`
	Data      map[string]any `json:"data"`
}

// openAIMetrics renames the platform's metrics as OpenAI's events and checkpoints name them
// (loss → train_loss, eval_loss → valid_loss); the others keep their names.
func openAIMetrics(step int64, metrics map[string]float64) map[string]any {
	out := map[string]any{"step": step}
	for name, value := range metrics {
		switch name {
		case "loss":
			out["train_loss"] = value
		case "eval_loss":
			out["valid_loss"] = value
		default:
			out[name] = value
		}
	}
	return out
}

// eventOf renders one job event; its id is `ftevent-<job>-<sequence>`.
func eventOf(jobID string, e *llmopsv1.JobEvent) eventObject {
	out := eventObject{
		ID: fmt.Sprintf("ftevent-%s-%d", jobID, e.GetSequence()), Object: "fine_tuning.job.event",
		CreatedAt: e.GetCreateTime().GetSeconds(), Level: "info", Message: e.GetMessage(), Type: "message",
		Data: map[string]any{},
	}
	switch e.GetType() {
	case llmopsv1.JobEventType_JOB_EVENT_TYPE_METRICS:
		out.Type = "metrics"
		out.Data = openAIMetrics(e.GetStep(), e.GetMetrics())
		if out.Message == "" {
			names := make([]string, 0, len(e.GetMetrics()))
			for name := range e.GetMetrics() {
				names = append(names, name)
			}
			slices.Sort(names)
			parts := make([]string, len(names))
			for i, name := range names {
				parts[i] = fmt.Sprintf("%s=%.4g", name, e.GetMetrics()[name])
			}
			out.Message = fmt.Sprintf("Step %d: %s", e.GetStep(), strings.Join(parts, ", "))
		}
	case llmopsv1.JobEventType_JOB_EVENT_TYPE_STATE_CHANGED:
		status := jobStatus(e.GetState())
		out.Data = map[string]any{"status": status}
		if e.GetState() == llmopsv1.JobState_JOB_STATE_FAILED {
			out.Level = "error"
		}
		if out.Message == "" {
			out.Message = "Job " + status
		}
	case llmopsv1.JobEventType_JOB_EVENT_TYPE_CHECKPOINT:
		out.Data = openAIMetrics(e.GetStep(), e.GetMetrics())
		if out.Message == "" {
			out.Message = fmt.Sprintf("Checkpoint written at step %d", e.GetStep())
		}
	}
	return out
}

type checkpointObject struct {
	ID                       string         `json:"id"`
	Object                   string         `json:"object"`
	CreatedAt                int64          `json:"created_at"`
	FineTunedModelCheckpoint string         `json:"fine_tuned_model_checkpoint"`
	StepNumber               int64          `json:"step_number"`
	Metrics                  map[string]any `json:"metrics"`
	FineTuningJobID          string         `json:"fine_tuning_job_id"`
}

// checkpointOf renders one checkpoint; `fine_tuned_model_checkpoint` is the model registered
// from it, or `<job>:step-<n>` when none is (POST /v1/trainingJobs/{id}/checkpoints/{step}:register
// registers one).
func checkpointOf(jobID string, c *llmopsv1.Checkpoint) checkpointObject {
	model := c.GetRegisteredModel()
	if model == "" {
		model = fmt.Sprintf("%s:step-%d", jobID, c.GetStep())
	}
	return checkpointObject{
		ID: fmt.Sprintf("ftckpt-%s-%d", jobID, c.GetStep()), Object: "fine_tuning.job.checkpoint",
		CreatedAt: c.GetCreateTime().GetSeconds(), FineTunedModelCheckpoint: model, StepNumber: c.GetStep(),
		Metrics: openAIMetrics(c.GetStep(), c.GetMetrics()), FineTuningJobID: jobID,
	}
}

// page takes OpenAI's cursor pagination over a full list: the items after the one whose id is
// `after` (all when empty), at most `limit`, and whether more follow.
func page[T any](items []T, id func(T) string, after string, limit int) ([]T, bool) {
	start := 0
	if after != "" {
		for i, item := range items {
			if id(item) == after {
				start = i + 1
				break
			}
		}
	}
	rest := items[start:]
	if len(rest) > limit {
		return rest[:limit], true
	}
	return rest, false
}

// pageArgs reads `after` and `limit` (1–100, default def).
func pageArgs(r *http.Request, def int) (string, int, *apiError) {
	q := r.URL.Query()
	limit := def
	if raw := q.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > 100 {
			return "", 0, invalidRequest("limit", "limit must be an integer from 1 to 100")
		}
		limit = n
	}
	return q.Get("after"), limit, nil
}

func listOf[T any](items []T, more bool, id func(T) string) listObject {
	out := listObject{Object: "list", Data: items, HasMore: more}
	if len(items) > 0 {
		first, last := id(items[0]), id(items[len(items)-1])
		out.FirstID, out.LastID = &first, &last
	}
	return out
}

// --- the handlers ---------------------------------------------------------------------------------

// baseModel is the default learning rate of `method` for the base model `ref` (0 when the model
// cannot be read), with the model's name when it was read now ("" when cached).
func (s *openAIServer) baseModel(ctx context.Context, ref string, method llmopsv1.TrainingMethod) (float64, string, error) {
	if size, ok := s.baseSizes.Load(ref); ok {
		return defaultLearningRate(method, size.(int64)), "", nil
	}
	m, err := s.registry.GetModel(ctx, &llmopsv1.GetModelRequest{Model: ref})
	if err != nil {
		return 0, "", err
	}
	s.baseSizes.Store(m.GetId(), m.GetSizeBytes())
	return defaultLearningRate(method, m.GetSizeBytes()), m.GetName(), nil
}

func (s *openAIServer) render(ctx context.Context, job *llmopsv1.TrainingJob) fineTuningJob {
	rate, _, _ := s.baseModel(ctx, job.GetBaseModel(), job.GetMethod())
	return jobOf(job, rate)
}

func (s *openAIServer) createJob(w http.ResponseWriter, r *http.Request, _ map[string]string) {
	var req fineTuneRequest
	if e := decodeBody(r.Body, &req); e != nil {
		writeAPIError(w, e)
		return
	}
	plan, e := translateFineTune(&req, r.Header.Get("Idempotency-Key"))
	if e != nil {
		writeAPIError(w, e)
		return
	}
	ctx, bad := s.callContext(r, methodCreateJob)
	if bad != nil {
		writeAPIError(w, bad)
		return
	}
	rate, name, err := s.baseModel(ctx, plan.req.GetBaseModel(), plan.req.GetMethod())
	if err != nil {
		writeAPIError(w, fromStatus(err, func(string) string { return "model" }))
		return
	}
	if plan.multiplier != nil {
		lr := roundSignificant(*plan.multiplier * rate)
		plan.req.Hyperparameters.LearningRate = &lr
	}
	if plan.suffix != "" {
		if name == "" { // cached: the name is needed now
			m, err := s.registry.GetModel(ctx, &llmopsv1.GetModelRequest{Model: plan.req.GetBaseModel()})
			if err != nil {
				writeAPIError(w, fromStatus(err, func(string) string { return "model" }))
				return
			}
			name = m.GetName()
		}
		plan.req.OutputName = name + "-" + plan.suffix
	}
	job, err := s.training.CreateTrainingJob(ctx, plan.req)
	if err != nil {
		writeAPIError(w, fromStatus(err, jobParams))
		return
	}
	writeJSONValue(w, s.render(ctx, job))
}

// jobCall runs one of the calls that take a job id and answer the job.
func (s *openAIServer) jobCall(method string, call func(context.Context, string) (*llmopsv1.TrainingJob, error)) func(http.ResponseWriter, *http.Request, map[string]string) {
	return func(w http.ResponseWriter, r *http.Request, path map[string]string) {
		ctx, bad := s.callContext(r, method)
		if bad != nil {
			writeAPIError(w, bad)
			return
		}
		job, err := call(ctx, path["id"])
		if err != nil {
			writeAPIError(w, fromStatus(err, jobIDParam))
			return
		}
		writeJSONValue(w, s.render(ctx, job))
	}
}

func (s *openAIServer) listJobs(w http.ResponseWriter, r *http.Request, _ map[string]string) {
	after, limit, e := pageArgs(r, 20)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	ctx, bad := s.callContext(r, methodListJobs)
	if bad != nil {
		writeAPIError(w, bad)
		return
	}
	var jobs []*llmopsv1.TrainingJob
	token := ""
	for {
		resp, err := s.training.ListTrainingJobs(ctx, &llmopsv1.ListTrainingJobsRequest{PageSize: jobsPageSize, PageToken: token})
		if err != nil {
			writeAPIError(w, fromStatus(err, func(string) string { return "" }))
			return
		}
		jobs = append(jobs, resp.GetTrainingJobs()...)
		token = resp.GetNextPageToken()
		if token == "" {
			break
		}
	}
	shown, more := page(jobs, (*llmopsv1.TrainingJob).GetId, after, limit)
	data := make([]fineTuningJob, len(shown))
	for i, job := range shown {
		data[i] = s.render(ctx, job)
	}
	writeJSONValue(w, listOf(data, more, func(j fineTuningJob) string { return j.ID }))
}

// listEvents answers a job's events newest first, as OpenAI lists them.
func (s *openAIServer) listEvents(w http.ResponseWriter, r *http.Request, path map[string]string) {
	after, limit, e := pageArgs(r, 20)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	ctx, bad := s.callContext(r, methodJobEvents)
	if bad != nil {
		writeAPIError(w, bad)
		return
	}
	id := path["id"]
	var events []eventObject
	token := ""
	for {
		resp, err := s.training.ListTrainingJobEvents(ctx, &llmopsv1.ListTrainingJobEventsRequest{Id: id, PageSize: jobsPageSize, PageToken: token})
		if err != nil {
			writeAPIError(w, fromStatus(err, jobIDParam))
			return
		}
		for _, ev := range resp.GetEvents() {
			events = append(events, eventOf(id, ev))
		}
		token = resp.GetNextPageToken()
		if token == "" {
			break
		}
	}
	slices.Reverse(events)
	shown, more := page(events, func(e eventObject) string { return e.ID }, after, limit)
	writeJSONValue(w, listOf(shown, more, func(e eventObject) string { return e.ID }))
}

// listCheckpoints answers a job's checkpoints newest first, as OpenAI lists them.
func (s *openAIServer) listCheckpoints(w http.ResponseWriter, r *http.Request, path map[string]string) {
	after, limit, e := pageArgs(r, 10)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	ctx, bad := s.callContext(r, methodJobCheckpoints)
	if bad != nil {
		writeAPIError(w, bad)
		return
	}
	id := path["id"]
	resp, err := s.training.ListTrainingJobCheckpoints(ctx, &llmopsv1.ListTrainingJobCheckpointsRequest{Id: id})
	if err != nil {
		writeAPIError(w, fromStatus(err, jobIDParam))
		return
	}
	checkpoints := make([]checkpointObject, len(resp.GetCheckpoints()))
	for i, c := range resp.GetCheckpoints() {
		checkpoints[i] = checkpointOf(id, c)
	}
	slices.Reverse(checkpoints)
	shown, more := page(checkpoints, func(c checkpointObject) string { return c.ID }, after, limit)
	writeJSONValue(w, listOf(shown, more, func(c checkpointObject) string { return c.ID }))
}

func (s *openAIServer) getJob(ctx context.Context, id string) (*llmopsv1.TrainingJob, error) {
	return s.training.GetTrainingJob(ctx, &llmopsv1.GetTrainingJobRequest{Id: id})
}

func (s *openAIServer) cancelJob(ctx context.Context, id string) (*llmopsv1.TrainingJob, error) {
	return s.training.CancelTrainingJob(ctx, &llmopsv1.CancelTrainingJobRequest{Id: id})
}

func (s *openAIServer) pauseJob(ctx context.Context, id string) (*llmopsv1.TrainingJob, error) {
	return s.training.PauseTrainingJob(ctx, &llmopsv1.PauseTrainingJobRequest{Id: id})
}

func (s *openAIServer) resumeJob(ctx context.Context, id string) (*llmopsv1.TrainingJob, error) {
	return s.training.ResumeTrainingJob(ctx, &llmopsv1.ResumeTrainingJobRequest{Id: id})
}

// jobIDParam names the job id for a refusal about a field of a call that takes only the id.
func jobIDParam(field string) string {
	if field == "" {
		return ""
	}
	return "fine_tuning_job_id"
}
