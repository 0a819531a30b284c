package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmopsv1 "github.com/llmops/gateway/gen/llmops/v1"
)

// --- translation (no backend) ---------------------------------------------------------------------

func translateJSON(t *testing.T, body string) (*jobPlan, *apiError) {
	t.Helper()
	var req fineTuneRequest
	if e := decodeBody(strings.NewReader(body), &req); e != nil {
		return nil, e
	}
	return translateFineTune(&req, "key-1")
}

func TestFineTuneRequestTranslation(t *testing.T) {
	plan, e := translateJSON(t, `{"model": "tiny", "training_file": "ds-1", "validation_file": "ds-2", "seed": 7,
		"suffix": "mine", "metadata": {"team": "a"},
		"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5, "max_steps": 3}}}}`)
	if e != nil {
		t.Fatal(e)
	}
	want := &llmopsv1.CreateTrainingJobRequest{
		Method: llmopsv1.TrainingMethod_TRAINING_METHOD_SFT, BaseModel: "tiny", Dataset: "ds-1", ValidationDataset: "ds-2",
		IdempotencyKey: "key-1",
		Hyperparameters: &llmopsv1.Hyperparameters{
			NumTrainEpochs: proto.Float64(2), MaxSteps: proto.Int64(3), Seed: proto.Int64(7),
		},
	}
	if !proto.Equal(plan.req, want) {
		t.Errorf("request %v, want %v", plan.req, want)
	}
	if plan.multiplier == nil || *plan.multiplier != 0.5 || plan.suffix != "mine" {
		t.Errorf("multiplier %v suffix %q", plan.multiplier, plan.suffix)
	}

	dpo, e := translateJSON(t, `{"model": "tiny", "training_file": "ds-1", "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "batch_size": 4}}}}`)
	if e != nil {
		t.Fatal(e)
	}
	if dpo.req.GetMethod() != llmopsv1.TrainingMethod_TRAINING_METHOD_DPO || dpo.req.GetHyperparameters().GetBeta() != 0.2 ||
		dpo.req.GetHyperparameters().GetPerDeviceTrainBatchSize() != 4 || dpo.multiplier != nil {
		t.Errorf("dpo: %v", dpo.req)
	}

	legacy, e := translateJSON(t, `{"model": "tiny", "training_file": "ds-1", "hyperparameters": {"n_epochs": "auto", "batch_size": 2}}`)
	if e != nil {
		t.Fatal(e)
	}
	if h := legacy.req.GetHyperparameters(); h.NumTrainEpochs != nil || h.GetPerDeviceTrainBatchSize() != 2 {
		t.Errorf("legacy: %v", h)
	}
}

func TestFineTuneRefusals(t *testing.T) {
	cases := map[string]string{
		`{"training_file": "ds-1"}`: "model",
		`{"model": "tiny"}`:         "training_file",
		`{"model": "tiny", "training_file": "ds-1", "method": {"type": "reinforcement"}}`:                                           "method.type",
		`{"model": "tiny", "training_file": "ds-1", "hyperparameters": {"beta": 0.1}}`:                                              "hyperparameters.beta",
		`{"model": "tiny", "training_file": "ds-1", "hyperparameters": {"learning_rate_multiplier": -1}}`:                           "hyperparameters.learning_rate_multiplier",
		`{"model": "tiny", "training_file": "ds-1", "hyperparameters": {"learning_rate_multiplier": 2, "learning_rate": 0.1}}`:      "hyperparameters.learning_rate",
		`{"model": "tiny", "training_file": "ds-1", "hyperparameters": {"n_epochs": "many"}}`:                                       "hyperparameters",
		`{"model": "tiny", "training_file": "ds-1", "hyperparameters": {"no_such_thing": 1}}`:                                       "hyperparameters",
		`{"model": "tiny", "training_file": "ds-1", "method": {"type": "supervised", "supervised": {"hyperparameters": {"x": 1}}}}`: "method.supervised.hyperparameters",
		`{"model": "tiny", "training_file": "ds-1", "integrations": [{"type": "wandb"}]}`:                                           "integrations",
		`{"model": "tiny", "training_file": "ds-1", "seed": "x"}`:                                                                   "seed",
	}
	for body, param := range cases {
		_, e := translateJSON(t, body)
		if e == nil || e.Status != http.StatusBadRequest || e.Param != param {
			t.Errorf("%s: got %+v, want 400 param %q", body, e, param)
		}
	}
}

func TestJobParamsNameOpenAIFields(t *testing.T) {
	for field, want := range map[string]string{
		"base_model": "model", "dataset": "training_file", "validation_dataset": "validation_file",
		"output_name": "suffix", "hyperparameters.seed": "seed", "hyperparameters.num_train_epochs": "hyperparameters.n_epochs",
		"hyperparameters.per_device_train_batch_size": "hyperparameters.batch_size", "hyperparameters.beta": "hyperparameters.beta",
		"hyperparameters.learning_rate": "hyperparameters.learning_rate_multiplier", "hyperparameters.lora_r": "hyperparameters.lora_r",
		"": "",
	} {
		if got := jobParams(field); got != want {
			t.Errorf("jobParams(%q) = %q, want %q", field, got, want)
		}
	}
}

func TestJobStatesMapToOpenAIStatuses(t *testing.T) {
	for state, want := range map[llmopsv1.JobState]string{
		llmopsv1.JobState_JOB_STATE_QUEUED: "queued", llmopsv1.JobState_JOB_STATE_RUNNING: "running",
		llmopsv1.JobState_JOB_STATE_SUCCEEDED: "succeeded", llmopsv1.JobState_JOB_STATE_FAILED: "failed",
		llmopsv1.JobState_JOB_STATE_CANCELLING: "cancelled", llmopsv1.JobState_JOB_STATE_CANCELLED: "cancelled",
		llmopsv1.JobState_JOB_STATE_PAUSED: "paused",
	} {
		if got := jobStatus(state); got != want {
			t.Errorf("%v: %q, want %q", state, got, want)
		}
	}
}

func sampleJob() *llmopsv1.TrainingJob {
	return &llmopsv1.TrainingJob{
		Id: "ftjob-1", Method: llmopsv1.TrainingMethod_TRAINING_METHOD_SFT, State: llmopsv1.JobState_JOB_STATE_SUCCEEDED,
		BaseModel: "mdl-1", Dataset: "ds-1", ResultModel: "mdl-2",
		ResolvedHyperparameters: &llmopsv1.Hyperparameters{
			NumTrainEpochs: proto.Float64(2), PerDeviceTrainBatchSize: proto.Int32(4), LearningRate: proto.Float64(1.5e-3), Seed: proto.Int64(42),
		},
		CreateTime: timestamppb.New(timestamppb.Now().AsTime().Truncate(1e9)),
		EndTime:    &timestamppb.Timestamp{Seconds: 1800000000},
		Progress:   &llmopsv1.JobProgress{Step: 4, TotalSteps: 4},
	}
}

func TestJobRendersAsFineTuningJob(t *testing.T) {
	job := jobOf(sampleJob(), 3e-3)
	var got map[string]any
	data, _ := json.Marshal(job)
	_ = json.Unmarshal(data, &got)
	for key, want := range map[string]any{
		"id": "ftjob-1", "object": "fine_tuning.job", "model": "mdl-1", "fine_tuned_model": "mdl-2", "status": "succeeded",
		"organization_id": "llmops", "training_file": "ds-1", "validation_file": nil, "finished_at": 1.8e9, "seed": 42.0,
		"error": nil, "trained_tokens": nil, "metadata": nil,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
	if files, ok := got["result_files"].([]any); !ok || len(files) != 0 {
		t.Errorf("result_files = %v", got["result_files"])
	}
	h := got["hyperparameters"].(map[string]any)
	if h["n_epochs"] != 2.0 || h["batch_size"] != 4.0 || h["learning_rate_multiplier"] != 0.5 {
		t.Errorf("hyperparameters %v", h)
	}
	method := got["method"].(map[string]any)
	if method["type"] != "supervised" || method["supervised"].(map[string]any)["hyperparameters"] == nil {
		t.Errorf("method %v", method)
	}

	counted := sampleJob()
	counted.Metrics = map[string]float64{"num_input_tokens_seen": 310, "num_tokens": 300}
	if r := jobOf(counted, 3e-3); r.TrainedTokens == nil || *r.TrainedTokens != 300 {
		t.Errorf("trained_tokens %v", r.TrainedTokens)
	}

	running := sampleJob()
	running.State = llmopsv1.JobState_JOB_STATE_RUNNING
	running.EndTime = nil
	running.ResolvedHyperparameters.NumTrainEpochs = nil
	running.ResolvedHyperparameters.MaxSteps = proto.Int64(30)
	if r := jobOf(running, 3e-3); r.FineTunedModel != nil || r.FinishedAt != nil || r.Hyperparameters["n_epochs"] != "auto" || r.Hyperparameters["max_steps"] != int64(30) {
		t.Errorf("running job %+v", r)
	}

	failed := sampleJob()
	failed.State = llmopsv1.JobState_JOB_STATE_FAILED
	failed.Error = status.New(codes.ResourceExhausted, "out of memory").Proto()
	if r := jobOf(failed, 3e-3); r.Error == nil || r.Error.Code != "resource_exhausted" || r.Error.Message != "out of memory" || r.FineTunedModel != nil {
		t.Errorf("failed job error %+v", r.Error)
	}

	dpo := sampleJob()
	dpo.Method = llmopsv1.TrainingMethod_TRAINING_METHOD_DPO
	dpo.ResolvedHyperparameters.Beta = proto.Float64(0.5)
	if r := jobOf(dpo, 2e-3); r.Method.Type != "dpo" || r.Hyperparameters["beta"] != 0.5 || r.Hyperparameters["learning_rate_multiplier"] != 0.75 {
		t.Errorf("dpo job %+v", r)
	}
}

func TestLearningRateDefaultsFollowTheModelSize(t *testing.T) {
	sft, dpo := llmopsv1.TrainingMethod_TRAINING_METHOD_SFT, llmopsv1.TrainingMethod_TRAINING_METHOD_DPO
	if defaultLearningRate(sft, 1<<20) != 3e-3 || defaultLearningRate(sft, 2<<30) != 2e-4 ||
		defaultLearningRate(dpo, 1<<20) != 2e-3 || defaultLearningRate(dpo, 2<<30) != 5e-6 {
		t.Error("default learning rates differ from the platform's table")
	}
}

func TestEventsAndCheckpointsRender(t *testing.T) {
	metrics := eventOf("ftjob-1", &llmopsv1.JobEvent{
		Sequence: 3, Type: llmopsv1.JobEventType_JOB_EVENT_TYPE_METRICS, Step: 2,
		Metrics: map[string]float64{"loss": 1.5, "eval_loss": 1.7, "learning_rate": 0.001},
	})
	if metrics.ID != "ftevent-ftjob-1-3" || metrics.Object != "fine_tuning.job.event" || metrics.Type != "metrics" ||
		metrics.Data["train_loss"] != 1.5 || metrics.Data["valid_loss"] != 1.7 || metrics.Data["step"] != int64(2) ||
		metrics.Message != "Step 2: eval_loss=1.7, learning_rate=0.001, loss=1.5" || metrics.Level != "info" {
		t.Errorf("metrics event %+v", metrics)
	}
	failed := eventOf("ftjob-1", &llmopsv1.JobEvent{Sequence: 9, Type: llmopsv1.JobEventType_JOB_EVENT_TYPE_STATE_CHANGED, State: llmopsv1.JobState_JOB_STATE_FAILED, Message: "boom"})
	if failed.Level != "error" || failed.Type != "message" || failed.Message != "boom" || failed.Data["status"] != "failed" {
		t.Errorf("state event %+v", failed)
	}
	checkpoint := checkpointOf("ftjob-1", &llmopsv1.Checkpoint{Step: 4, Metrics: map[string]float64{"loss": 0.5}})
	if checkpoint.ID != "ftckpt-ftjob-1-4" || checkpoint.Object != "fine_tuning.job.checkpoint" || checkpoint.StepNumber != 4 ||
		checkpoint.FineTunedModelCheckpoint != "ftjob-1:step-4" || checkpoint.FineTuningJobID != "ftjob-1" || checkpoint.Metrics["train_loss"] != 0.5 {
		t.Errorf("checkpoint %+v", checkpoint)
	}
	registered := checkpointOf("ftjob-1", &llmopsv1.Checkpoint{Step: 4, RegisteredModel: "mdl-9"})
	if registered.FineTunedModelCheckpoint != "mdl-9" {
		t.Errorf("registered checkpoint %+v", registered)
	}
}

func TestCursorPages(t *testing.T) {
	items := []string{"a", "b", "c", "d"}
	id := func(s string) string { return s }
	for _, tc := range []struct {
		after string
		limit int
		want  string
		more  bool
	}{{"", 2, "a,b", true}, {"b", 2, "c,d", false}, {"d", 2, "", false}, {"", 10, "a,b,c,d", false}} {
		got, more := page(items, id, tc.after, tc.limit)
		if strings.Join(got, ",") != tc.want || more != tc.more {
			t.Errorf("after %q limit %d: %v %v", tc.after, tc.limit, got, more)
		}
	}
}

func TestFileFormatsAndPreferenceConversion(t *testing.T) {
	for line, want := range map[string]rowFormat{
		`{"messages": [{"role": "user", "content": "hi"}]}`:                               formatSFT,
		`{"prompt": "a", "completion": "b"}`:                                              formatSFT,
		`{"prompt": "a", "chosen": "b", "rejected": "c"}`:                                 formatPreference,
		`{"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []}`: formatOpenAIPreference,
		`{"text": "not a chat row"}`:                                                      formatSFT,
		`not json`:                                                                        formatSFT,
	} {
		if got := formatOf([]byte(line)); got != want {
			t.Errorf("formatOf(%s) = %v, want %v", line, got, want)
		}
	}
	row := `{"input": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "<hi>"}]}]},
		"preferred_output": [{"role": "assistant", "content": "hello"}], "non_preferred_output": [{"role": "assistant", "content": "go away"}]}`
	converted, err := convertPreference([]byte(strings.ReplaceAll(row, "\n", "")), 1)
	if err != nil || string(converted) != `{"prompt":"Say <hi>","chosen":"hello","rejected":"go away"}`+"\n" {
		t.Errorf("converted %q, %v", converted, err)
	}
	multiTurn := `{"input": {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}, "preferred_output": [{"role": "assistant", "content": "a"}], "non_preferred_output": [{"role": "assistant", "content": "b"}]}`
	if _, err := convertPreference([]byte(multiTurn), 3); err == nil || !strings.HasPrefix(err.Error(), "line 3, input.messages") {
		t.Errorf("multi-turn input: %v", err)
	}
}

// --- through the gateway, against fake services -----------------------------------------------------

type fakeDatasets struct {
	fakeModels
	mu       sync.Mutex
	uploaded map[string][]byte // by id
	kinds    map[string]llmopsv1.DatasetKind
	chunks   int
}

func (f *fakeDatasets) UploadDataset(stream grpc.ClientStreamingServer[llmopsv1.UploadDatasetRequest, llmopsv1.UploadDatasetResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	meta := first.GetMetadata()
	var data []byte
	chunks := 0
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		data = append(data, msg.GetChunk()...)
		chunks++
	}
	if bytes.Contains(data, []byte(`"text"`)) {
		st, _ := status.New(codes.InvalidArgument, "dataset refused: 2 problem(s) in its rows, each named in the field violations").WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{
				{Field: "lines[1]", Description: "an sft row needs prompt and completion, or messages"},
				{Field: "lines[2]", Description: "an sft row needs prompt and completion, or messages"},
			},
		})
		return st.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := fmt.Sprintf("ds-%d", len(f.uploaded)+1)
	f.uploaded[id], f.kinds[id], f.chunks = data, meta.GetKind(), chunks
	return stream.SendAndClose(&llmopsv1.UploadDatasetResponse{Dataset: &llmopsv1.Dataset{
		Id: id, Name: "x", Kind: meta.GetKind(), Description: meta.GetDescription(), SizeBytes: int64(len(data)),
		CreateTime: &timestamppb.Timestamp{Seconds: 1700000000},
	}})
}

func (f *fakeDatasets) GetDataset(_ context.Context, req *llmopsv1.GetDatasetRequest) (*llmopsv1.Dataset, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if data, ok := f.uploaded[req.GetDataset()]; ok {
		return &llmopsv1.Dataset{Id: req.GetDataset(), Kind: f.kinds[req.GetDataset()], SizeBytes: int64(len(data)), Description: filePrefix + "train.jsonl"}, nil
	}
	st, _ := status.New(codes.NotFound, "dataset not found").WithDetails(&errdetails.ResourceInfo{ResourceType: "dataset"})
	return nil, st.Err()
}

type fakeJobs struct {
	llmopsv1.UnimplementedTrainingServiceServer
	mu      sync.Mutex
	created []*llmopsv1.CreateTrainingJobRequest
}

func (f *fakeJobs) CreateTrainingJob(_ context.Context, req *llmopsv1.CreateTrainingJobRequest) (*llmopsv1.TrainingJob, error) {
	f.mu.Lock()
	f.created = append(f.created, req)
	f.mu.Unlock()
	return &llmopsv1.TrainingJob{
		Id: "ftjob-1", Method: req.GetMethod(), State: llmopsv1.JobState_JOB_STATE_QUEUED, BaseModel: "mdl-000000000001",
		Dataset: req.GetDataset(), Hyperparameters: req.GetHyperparameters(), ResolvedHyperparameters: req.GetHyperparameters(),
		OutputName: req.GetOutputName(), IdempotencyKey: req.GetIdempotencyKey(),
	}, nil
}

func (f *fakeJobs) GetTrainingJob(_ context.Context, req *llmopsv1.GetTrainingJobRequest) (*llmopsv1.TrainingJob, error) {
	st, _ := status.New(codes.NotFound, fmt.Sprintf("job %q not found", req.GetId())).WithDetails(&errdetails.ResourceInfo{ResourceType: "training_job"})
	return nil, st.Err()
}

func (f *fakeJobs) ListTrainingJobs(_ context.Context, req *llmopsv1.ListTrainingJobsRequest) (*llmopsv1.ListTrainingJobsResponse, error) {
	// three jobs over two pages
	if req.GetPageToken() == "" {
		return &llmopsv1.ListTrainingJobsResponse{TrainingJobs: []*llmopsv1.TrainingJob{{Id: "ftjob-3"}, {Id: "ftjob-2"}}, NextPageToken: "2"}, nil
	}
	return &llmopsv1.ListTrainingJobsResponse{TrainingJobs: []*llmopsv1.TrainingJob{{Id: "ftjob-1"}}}, nil
}

type fineTuneBackend struct {
	datasets *fakeDatasets
	training *fakeJobs
	url      string
}

func startFineTuneBackend(t *testing.T) *fineTuneBackend {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := &llmopsv1.Model{Id: "mdl-000000000001", Name: "tiny", Version: 1, Kind: llmopsv1.ModelKind_MODEL_KIND_BASE, SizeBytes: 1 << 20}
	datasets := &fakeDatasets{fakeModels: fakeModels{models: []*llmopsv1.Model{base}}, uploaded: map[string][]byte{}, kinds: map[string]llmopsv1.DatasetKind{}}
	training := &fakeJobs{}
	server := grpc.NewServer()
	llmopsv1.RegisterRegistryServiceServer(server, datasets)
	llmopsv1.RegisterTrainingServiceServer(server, training)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	gw := startGateway(t, testConfig(listener.Addr().String()))
	return &fineTuneBackend{datasets: datasets, training: training, url: gw.URL + openAIPrefix}
}

func uploadFile(t *testing.T, url, purpose, content string) (int, map[string]any) {
	t.Helper()
	var body bytes.Buffer
	form := multipart.NewWriter(&body)
	if purpose != "" {
		_ = form.WriteField("purpose", purpose)
	}
	part, _ := form.CreateFormFile("file", "train.jsonl")
	_, _ = part.Write([]byte(content))
	_ = form.Close()
	resp, err := http.Post(url+"/files", form.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, decodeJSON(t, string(data))
}

func TestFilesRoutes(t *testing.T) {
	b := startFineTuneBackend(t)
	chat := strings.Repeat(`{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}`+"\n", 3)
	code, file := uploadFile(t, b.url, "fine-tune", chat)
	if code != http.StatusOK || file["object"] != "file" || file["id"] != "ds-1" || file["filename"] != "train.jsonl" ||
		file["purpose"] != "fine-tune" || file["status"] != "processed" || file["bytes"] != float64(len(chat)) {
		t.Fatalf("%d %v", code, file)
	}
	if string(b.datasets.uploaded["ds-1"]) != chat || b.datasets.kinds["ds-1"] != llmopsv1.DatasetKind_DATASET_KIND_SFT {
		t.Errorf("uploaded %q as %v", b.datasets.uploaded["ds-1"], b.datasets.kinds["ds-1"])
	}

	dpo := `{"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "assistant", "content": "good"}], "non_preferred_output": [{"role": "assistant", "content": "bad"}]}`
	if code, file := uploadFile(t, b.url, "fine-tune", dpo); code != http.StatusOK || file["id"] != "ds-2" {
		t.Fatalf("%d %v", code, file)
	}
	if string(b.datasets.uploaded["ds-2"]) != `{"prompt":"q","chosen":"good","rejected":"bad"}`+"\n" || b.datasets.kinds["ds-2"] != llmopsv1.DatasetKind_DATASET_KIND_PREFERENCE {
		t.Errorf("converted %q as %v", b.datasets.uploaded["ds-2"], b.datasets.kinds["ds-2"])
	}

	spaced := "\n \n" + chat
	if code, file := uploadFile(t, b.url, "fine-tune", spaced); code != http.StatusOK || string(b.datasets.uploaded[file["id"].(string)]) != spaced {
		t.Errorf("blank lines first: %d %v", code, file)
	}
	badDPO := "\n" + strings.Replace(dpo, `"role": "user"`, `"role": "system"`, 1)
	if code, refused := uploadFile(t, b.url, "fine-tune", badDPO); code != http.StatusBadRequest ||
		!strings.HasPrefix(refused["error"].(map[string]any)["message"].(string), "line 2, input.messages") {
		t.Errorf("%d %v", code, refused)
	}

	code, refused := uploadFile(t, b.url, "fine-tune", `{"text": "a"}`+"\n"+`{"text": "b"}`+"\n")
	e := refused["error"].(map[string]any)
	if code != http.StatusBadRequest || e["param"] != "file" || !strings.Contains(e["message"].(string), "lines[1]: an sft row needs") ||
		!strings.Contains(e["message"].(string), "lines[2]: ") {
		t.Errorf("%d %v", code, refused)
	}
	if code, refused := uploadFile(t, b.url, "assistants", chat); code != http.StatusBadRequest || refused["error"].(map[string]any)["param"] != "purpose" {
		t.Errorf("%d %v", code, refused)
	}
	if code, refused := uploadFile(t, b.url, "", chat); code != http.StatusBadRequest || refused["error"].(map[string]any)["param"] != "purpose" {
		t.Errorf("%d %v", code, refused)
	}

	code, got := getJSON(t, b.url+"/files/ds-1")
	if code != http.StatusOK || got["id"] != "ds-1" || got["filename"] != "train.jsonl" {
		t.Errorf("%d %v", code, got)
	}
	code, missing := getJSON(t, b.url+"/files/ds-404")
	if code != http.StatusNotFound || missing["error"].(map[string]any)["code"] != nil {
		t.Errorf("%d %v", code, missing)
	}
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, decodeJSON(t, string(data))
}

func TestFineTuningJobRoutes(t *testing.T) {
	b := startFineTuneBackend(t)
	body := `{"model": "tiny", "training_file": "ds-1", "suffix": "mine",
		"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "learning_rate_multiplier": 2}}}}`
	req, _ := http.NewRequest(http.MethodPost, b.url+"/fine_tuning/jobs", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "once")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	job := decodeJSON(t, string(data))
	if resp.StatusCode != http.StatusOK || job["object"] != "fine_tuning.job" || job["status"] != "queued" || job["fine_tuned_model"] != nil {
		t.Fatalf("%d %s", resp.StatusCode, data)
	}
	if h := job["hyperparameters"].(map[string]any); h["learning_rate_multiplier"] != 2.0 || h["n_epochs"] != 2.0 {
		t.Errorf("hyperparameters %v", h)
	}
	sent := b.training.created[0]
	want := &llmopsv1.CreateTrainingJobRequest{
		Method: llmopsv1.TrainingMethod_TRAINING_METHOD_SFT, BaseModel: "tiny", Dataset: "ds-1", OutputName: "tiny-mine", IdempotencyKey: "once",
		Hyperparameters: &llmopsv1.Hyperparameters{NumTrainEpochs: proto.Float64(2), LearningRate: proto.Float64(6e-3)},
	}
	if !proto.Equal(sent, want) {
		t.Errorf("sent %s, want %s", protojson.Format(sent), protojson.Format(want))
	}

	code, missing := getJSON(t, b.url+"/fine_tuning/jobs/ftjob-404")
	if e := missing["error"].(map[string]any); code != http.StatusNotFound || e["code"] != nil || e["type"] != "invalid_request_error" {
		t.Errorf("%d %v", code, missing)
	}

	code, list := getJSON(t, b.url+"/fine_tuning/jobs?limit=2")
	if code != http.StatusOK || list["object"] != "list" || list["has_more"] != true || len(list["data"].([]any)) != 2 {
		t.Errorf("%d %v", code, list)
	}
	code, rest := getJSON(t, b.url+"/fine_tuning/jobs?limit=2&after=ftjob-2")
	if data := rest["data"].([]any); code != http.StatusOK || rest["has_more"] != false || len(data) != 1 || data[0].(map[string]any)["id"] != "ftjob-1" {
		t.Errorf("%d %v", code, rest)
	}
	if code, bad := getJSON(t, b.url+"/fine_tuning/jobs?limit=0"); code != http.StatusBadRequest || bad["error"].(map[string]any)["param"] != "limit" {
		t.Errorf("%d %v", code, bad)
	}
}
