package main

import (
	"io"
	"slices"
	"testing"
)

func TestInferenceBackendsFromFlagsAndEnvironment(t *testing.T) {
	env := map[string]string{"LLMOPS_GATEWAY_INFERENCE_BACKENDS": "inference-0:50051, inference-1:50051"}
	cfg, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.InferenceBackends, []string{"inference-0:50051", "inference-1:50051"}) || cfg.InferenceRouting != routingAffinity {
		t.Errorf("%q routed by %q", cfg.InferenceBackends, cfg.InferenceRouting)
	}
	cfg, err = parseConfig([]string{"-inference-routing", "round-robin"}, func(string) string { return "" }, io.Discard)
	if err != nil || cfg.InferenceBackends != nil || cfg.InferenceRouting != routingRoundRobin {
		t.Errorf("%v: %q routed by %q", err, cfg.InferenceBackends, cfg.InferenceRouting)
	}
	for _, args := range [][]string{{"-inference-routing", "random"}, {"-inference-backends", "a:1,,b:1"}} {
		if _, err := parseConfig(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v was accepted", args)
		}
	}
}
