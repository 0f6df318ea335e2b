// The eval loop (see eval/runner.h): LongBench's pred.py steps on our engine.
#include "eval/runner.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "eval/search.h"
#include "loader/error.h"

namespace llm {

int eval_context(const Model& model, const EvalRunOptions& o) {
  if (o.n_ctx < 0) fail("eval: the context must be a positive number of tokens, got ", o.n_ctx);
  if (o.n_ctx > 0) return o.n_ctx;
  const int m = model.config().max_seq_len;
  return m > 0 ? m : 4096;
}

std::vector<int> eval_prompt_tokens(const Model& model, const LongBenchDataset& d, const LongBenchRecord& r, int n_ctx,
                                    int* full_tokens) {
  const int budget = n_ctx - d.max_gen;
  if (budget < 2)
    fail("eval: the context of ", n_ctx, " tokens leaves no room for a prompt after ", d.name, "'s ", d.max_gen,
         " answer tokens; raise -c");
  const std::string prompt = longbench_format_prompt(d.prompt, r);
  // pred.py: the chat template wraps every prompt except the few-shot / code-completion datasets'.
  std::vector<int> ids = d.skip_chat ? model.tokenize(prompt, true, false)
                                     : model.tokenize(model.chat_prompt({{"user", prompt}}, true), false, true);
  if (full_tokens) *full_tokens = static_cast<int>(ids.size());
  if (ids.empty()) fail("eval: record '", r.id, "' (", r.dataset, "): the prompt encodes to no tokens");
  if (ids.size() > static_cast<size_t>(budget)) {
    std::vector<int32_t> v(ids.begin(), ids.end());
    v = truncate_middle(v, static_cast<size_t>(budget));
    ids.assign(v.begin(), v.end());
  }
  return ids;
}

EvalRecordRun eval_record(Model& model, Session& session, const LongBenchRecord& r, const EvalRunOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const LongBenchDataset& d = longbench_dataset(r.dataset);
  const int n_ctx = eval_context(model, o);
  if (session.n_ctx() < n_ctx) fail("eval: the session's context ", session.n_ctx(), " is below ", n_ctx);
  EvalRecordRun run;
  run.result.id = r.id;
  run.result.dataset = r.dataset;
  run.result.length = r.length;
  const std::vector<int> ids = eval_prompt_tokens(model, d, r, n_ctx, &run.full_tokens);
  run.prompt_tokens = static_cast<int>(ids.size());
  session.reset();
  session.feed(ids);
  if (session.n_past() > 0) {
    run.kv_engine_bytes_per_token = double(session.kv_cache_bytes()) / session.n_past();
    run.kv_bytes_per_token = kv_bytes_16bit(model.kv_description(), run.kv_engine_bytes_per_token);
  }

  GenerateOptions g;
  g.max_tokens = d.max_gen;
  g.sampling = SamplerParams{};  // greedy (num_beams=1, do_sample=False)
  g.stop_at_eos = true;
  // samsum: pred.py adds the "\n" token to the EOS ids, with min_length = prompt + 1 (one token first).
  int newline = -1;
  if (d.stop_at_newline) {
    const std::vector<int> nl = model.tokenize("\n", false, false);
    if (!nl.empty()) newline = nl.back();
  }
  int n_gen = 0;
  const GenerateResult res = session.generate(g, [&](const std::string&, int token) {
    ++n_gen;
    return !(newline >= 0 && token == newline && n_gen > 1);
  });
  run.generated_tokens = static_cast<int>(res.tokens.size());
  run.result.prediction = res.text;
  run.result.score = longbench_score(d, res.text, r.answers, r.all_classes, o.fuzz);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return run;
}

std::vector<EvalRecordRun> eval_records(Model& model, const std::vector<LongBenchRecord>& records,
                                        const EvalRunOptions& o,
                                        const std::function<void(const EvalRecordRun&)>& on_record) {
  const int n_ctx = eval_context(model, o);
  if (model.config().max_seq_len > 0 && n_ctx > model.config().max_seq_len)
    fail("eval: -c ", n_ctx, " exceeds the model's maximum context of ", model.config().max_seq_len);
  for (const auto& r : records) longbench_dataset(r.dataset);  // unknown datasets fail before any work
  Session session(model, {.n_ctx = n_ctx});
  std::vector<EvalRecordRun> out;
  out.reserve(records.size());
  for (const auto& r : records) {
    out.push_back(eval_record(model, session, r, o));
    if (on_record) on_record(out.back());
  }
  return out;
}

std::vector<LongBenchRecord> eval_select(const std::vector<LongBenchRecord>& records, const std::string& task,
                                         size_t limit) {
  std::vector<LongBenchRecord> out;
  std::map<std::string, size_t> taken;
  bool seen_task = task.empty();
  for (const auto& r : records) {
    if (!task.empty() && r.dataset != task) continue;
    seen_task = true;
    if (limit > 0 && taken[r.dataset] >= limit) continue;
    ++taken[r.dataset];
    out.push_back(r);
  }
  if (!seen_task) {
    std::string have;
    std::map<std::string, int> names;
    for (const auto& r : records) names[r.dataset]++;
    for (const auto& [n, c] : names) have += (have.empty() ? "" : ", ") + n;
    fail("eval: --task ", task, ": no record of that dataset in the data (it has: ", have, ")");
  }
  if (out.empty()) fail("eval: no records to evaluate");
  return out;
}

std::vector<EvalRecordResult> eval_results(const std::vector<EvalRecordRun>& runs) {
  std::vector<EvalRecordResult> out;
  out.reserve(runs.size());
  for (const auto& r : runs) out.push_back(r.result);
  return out;
}

double eval_mean_kv_bytes(const std::vector<EvalRecordRun>& runs) {
  if (runs.empty()) return 0.0;
  double s = 0.0;
  for (const auto& r : runs) s += r.kv_bytes_per_token;
  return s / static_cast<double>(runs.size());
}

}  // namespace llm
