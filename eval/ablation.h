// Ablation table (issue 8): each compression component of a full compressed `--kv` spec switched off in turn,
// scored with the same eval, next to the full cache and the full compressed spec.
//
// Components and how each is switched off (a spec edit; the engine checks the result when the model loads):
//   low-rank keys     svd k -> head_dim
//   low-rank values   svd v -> head_dim, policy=uniform
//   adaptive ranks    svd policy -> uniform at the spec's mean value rank (the same bytes per token)
//   importance terms  issue 7's weights a (window attention), b (cumulative attention), c (positional prior) -> 0
//                     in the "imp" part (added with the one weight when the spec ranks tokens by importance
//                     through quant/keep/evict without an imp part)
//   quantisation      the "quant" part removed
//   propagation       the "keep" part removed (selective propagation)
//   eviction          the "evict" part removed (a row only when the spec has one)
// A component the spec does not use, or this engine build does not have, is a row marked "not available" with
// the reason: never silently dropped.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "eval/report.h"
#include "loader/config.h"

namespace llm {

struct AblationRow {
  std::string name;    // "full cache", "all on", "no low-rank keys", ...
  std::string spec;    // the spec evaluated (empty when not available)
  bool available = true;
  std::string note;    // what switching off means, or why the row is not available
  // filled by ablation_run:
  bool done = false;
  EvalSummary summary;
  double kv_bytes_per_token = 0.0;  // measured
  double seconds = 0.0;
};

// The rows for a full compressed spec on a model config (rows 0 and 1: the full cache and the spec itself).
std::vector<AblationRow> ablation_plan(const std::string& full_spec, const Config& c);

// What one evaluation gives back.
struct AblationEval {
  EvalSummary summary;
  double kv_bytes_per_token = 0.0;
};
// Evaluates every available row in order. on_row (may be empty) after each.
void ablation_run(std::vector<AblationRow>& rows, const std::function<AblationEval(const std::string& spec)>& eval,
                  const std::function<void(const AblationRow&)>& on_row = {});

// Text table: component, spec, score per task, average, delta vs "all on", KV bytes per token, reduction.
std::string ablation_table(const std::vector<AblationRow>& rows);
std::string ablation_json(const std::vector<AblationRow>& rows);  // one JSON object (no trailing newline)

}  // namespace llm
