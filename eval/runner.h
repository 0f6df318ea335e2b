// The `llm eval` loop over LongBench records with a loaded model (the protocol is in eval/longbench.h): format the
// prompt, wrap it in the chat template unless the dataset skips it, tokenize, middle-truncate to the context minus
// the dataset's max_gen, greedy-decode with LongBench's stop rules, score. Shared by `llm eval`, the ablation table
// (eval/ablation.h) and the hyper-parameter search (eval/search.h).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/llm.h"
#include "eval/longbench.h"
#include "eval/report.h"

namespace llm {

struct EvalRunOptions {
  int n_ctx = 0;  // context (prompt + answer) in tokens; 0: the model's max_seq_len (4096 when unknown)
  FuzzMatcher fuzz = FuzzMatcher::difflib;
};

// One record's outcome with the numbers behind it.
struct EvalRecordRun {
  EvalRecordResult result;  // id, dataset, length, score, prediction
  int prompt_tokens = 0;    // fed to the model (after truncation, chat template included)
  int full_tokens = 0;      // before truncation
  int generated_tokens = 0;
  // KV-cache bytes per prompt token right after the prefill, at 16 bits per unquantised value (kv_bytes_16bit);
  // kv_engine_bytes_per_token is Session::kv_cache_bytes() / tokens as the CPU engine stores them.
  double kv_bytes_per_token = 0.0;
  double kv_engine_bytes_per_token = 0.0;
  double seconds = 0.0;
};

// The tokens a record's prompt becomes (chat template unless d.skip_chat; BOS as the tokenizer adds it without
// it), middle-truncated to n_ctx - d.max_gen. full_tokens gets the length before truncation. The budget includes
// the chat template's tokens (LongBench truncates before wrapping, which can overflow a context by the template's
// length; here the answer always fits). Throws when n_ctx - max_gen < 2.
std::vector<int> eval_prompt_tokens(const Model& model, const LongBenchDataset& d, const LongBenchRecord& r, int n_ctx,
                                    int* full_tokens = nullptr);

// Runs one record through `session` (reset first; its context must be >= n_ctx) and scores it.
EvalRecordRun eval_record(Model& model, Session& session, const LongBenchRecord& r, const EvalRunOptions& o);

// Every record in order, one session of n_ctx tokens reused. on_record (may be empty) is called after each.
std::vector<EvalRecordRun> eval_records(Model& model, const std::vector<LongBenchRecord>& records,
                                        const EvalRunOptions& o,
                                        const std::function<void(const EvalRecordRun&)>& on_record = {});

// The context eval_records uses for a model: o.n_ctx, or the model's max_seq_len (4096 when unknown).
int eval_context(const Model& model, const EvalRunOptions& o);

// Records of one dataset (empty: all), at most `limit` per dataset (0: all). Errors when nothing is left.
std::vector<LongBenchRecord> eval_select(const std::vector<LongBenchRecord>& records, const std::string& task,
                                         size_t limit);

std::vector<EvalRecordResult> eval_results(const std::vector<EvalRecordRun>& runs);
// Mean of kv_bytes_per_token over the runs (0 when none).
double eval_mean_kv_bytes(const std::vector<EvalRecordRun>& runs);

}  // namespace llm
