// llm eval: LongBench-format long-context evaluation (issue 8; docs/eval.md).
//   llm eval -m MODEL --data FILE.jsonl [--task NAME] [--kv SPEC] [--limit N] [--json OUT] [-c CTX]
//   llm eval ... --ablate                      each compression component of --kv switched off in turn
//   llm eval ... --search random|evolve --budget-ratio R --trials N --seed S
//   llm eval --plot quality|speed --from FILE[,FILE...] --svg OUT
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "eval/ablation.h"
#include "eval/plot_svg.h"
#include "eval/runner.h"
#include "eval/search.h"
#include "gen_common.h"
#include "loader/error.h"

namespace llm_cli {

namespace {

using ojson = nlohmann::ordered_json;

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  if (!out) llm::fail("llm eval: cannot write '", path, "' (check the directory exists and is writable)");
  out << text;
  if (!out) llm::fail("llm eval: writing '", path, "' failed");
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t p = s.find(',', start);
    std::string item = s.substr(start, p == std::string::npos ? std::string::npos : p - start);
    if (!item.empty()) out.push_back(item);
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

// A progress line with an ETA over `total` records, on stderr when it is a terminal; otherwise nothing.
struct MaybeProgress {
  std::unique_ptr<llm::Progress> p;
  explicit MaybeProgress(size_t total) {
    if (isatty(STDERR_FILENO)) {
      p = std::make_unique<llm::Progress>();
      p->total = total;
    }
  }
  void step(const std::string& note) {
    if (p) p->step(note);
  }
  void finish() {
    if (p) p->finish();
  }
};

ojson record_json(const llm::EvalRecordRun& r) {
  ojson o;
  o["_id"] = r.result.id;
  o["dataset"] = r.result.dataset;
  o["length"] = r.result.length;
  o["score"] = r.result.score;
  o["prediction"] = r.result.prediction;
  o["prompt_tokens"] = r.prompt_tokens;
  o["full_tokens"] = r.full_tokens;
  o["generated_tokens"] = r.generated_tokens;
  o["kv_bytes_per_token"] = r.kv_bytes_per_token;
  o["kv_engine_bytes_per_token"] = r.kv_engine_bytes_per_token;
  o["seconds"] = r.seconds;
  return o;
}

// Loads the model with a KV spec (no progress bar: the search loads many).
std::unique_ptr<llm::Model> load_with_spec(const Args& a, const std::string& spec) {
  llm::LoadOptions o = load_options(a);
  o.on_progress = {};
  o.kv = spec;
  o.kv_config.clear();
  if (spec == "full") o.kv_profile.clear();  // a profile only goes with a low-rank cache
  return std::make_unique<llm::Model>(a.get("model", default_model_path()), o);
}

// ---- plots ----

ojson read_json_file(const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return ojson::parse(text);
  } catch (const std::exception&) {
  }
  // JSON lines (several `llm bench --json` outputs appended): an array of the objects
  ojson arr = ojson::array();
  size_t start = 0, line = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    std::string l = text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    ++line;
    start = nl == std::string::npos ? text.size() : nl + 1;
    if (l.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      arr.push_back(ojson::parse(l));
    } catch (const std::exception& e) {
      llm::fail("llm eval --plot: '", path, "' line ", line, " is not JSON (", e.what(), ")");
    }
  }
  if (arr.empty()) llm::fail("llm eval --plot: '", path, "' holds no JSON");
  return arr;
}

double num_field(const ojson& o, const char* key, const std::string& where) {
  if (!o.contains(key) || !o[key].is_number())
    llm::fail("llm eval --plot: ", where, " has no number \"", key, "\"");
  return o[key].get<double>();
}

// Quality points from `llm eval --json` (one run), `--search --json` (trials) or `--ablate --json` (rows).
void quality_points(const ojson& j, const std::string& path, std::vector<llm::PlotPoint>& pts) {
  if (j.is_array()) {
    for (const auto& x : j) quality_points(x, path, pts);
  } else if (j.contains("trials")) {
    for (const auto& t : j["trials"])
      pts.push_back({num_field(t, "kv_bytes_per_token", path), num_field(t, "score", path), t.value("spec", "")});
  } else if (j.contains("rows")) {
    for (const auto& r : j["rows"])
      if (r.contains("average"))
        pts.push_back({num_field(r, "kv_bytes_per_token", path), num_field(r, "average", path),
                       r.value("component", "") + ": " + r.value("spec", "")});
  } else if (j.contains("summary") && j.contains("kv_bytes_per_token")) {
    pts.push_back({num_field(j, "kv_bytes_per_token", path), num_field(j["summary"], "average", path), j.value("kv", "")});
  } else {
    llm::fail("llm eval --plot quality: '", path,
              "' is not an `llm eval --json` output (eval, --search or --ablate): no trials, rows or summary");
  }
}

int run_plot(const Args& a) {
  const std::string kind = a.get("plot");
  if (!a.has("from")) llm::fail("llm eval --plot: give the input files with --from FILE[,FILE...]");
  if (!a.has("svg")) llm::fail("llm eval --plot: give the output file with --svg OUT");
  const std::vector<std::string> files = split_commas(a.get("from"));
  llm::PlotOptions o;
  std::string svg;
  if (kind == "quality") {
    std::vector<llm::PlotPoint> pts;
    for (const auto& f : files) quality_points(read_json_file(f), f, pts);
    o.title = a.get("title", "Quality against KV-cache size");
    o.x_label = "KV cache bytes per token";
    o.y_label = "average score";
    svg = llm::svg_pareto_plot(pts, o);
    std::fprintf(stderr, "llm eval --plot quality: %zu points, %zu on the Pareto front\n", pts.size(),
                 llm::pareto_front(pts).size());
  } else if (kind == "speed") {
    // `llm bench --json` objects: x = prompt tokens (the context decoded against), y = decode tok/s; one series
    // per "kv" value (or per file, named by its stem, when the objects have none)
    std::vector<llm::PlotSeries> series;
    auto series_for = [&](const std::string& name) -> llm::PlotSeries& {
      for (auto& s : series)
        if (s.name == name) return s;
      series.push_back({name, {}, true});
      return series.back();
    };
    for (const auto& f : files) {
      ojson j = read_json_file(f);
      if (!j.is_array()) j = ojson::array({j});
      for (const auto& b : j) {
        std::string stem = f.substr(f.find_last_of('/') == std::string::npos ? 0 : f.find_last_of('/') + 1);
        if (stem.find('.') != std::string::npos) stem = stem.substr(0, stem.find('.'));
        const std::string name = b.contains("kv") && b["kv"].is_string() ? b["kv"].get<std::string>() : stem;
        // --cpu-time: tokens per CPU-second (bench's decode_cpu_ms_per_token), robust on a loaded machine
        const double y = a.has("cpu-time") ? 1000.0 / num_field(b, "decode_cpu_ms_per_token", f)
                                           : num_field(b, "decode_tok_s", f);
        series_for(name).points.push_back({num_field(b, "n_prompt", f), y, ""});
      }
    }
    o.title = a.get("title", "Decode speed against context length");
    o.x_label = "context (prompt tokens)";
    o.y_label = a.has("cpu-time") ? "decode tokens per CPU-second" : "decode tokens / s";
    svg = llm::svg_line_plot(series, o);
  } else {
    llm::fail("llm eval --plot: expected quality or speed, got '", kind, "'");
  }
  write_file(a.get("svg"), svg);
  std::fprintf(stderr, "llm eval --plot: wrote %s (%zu bytes)\n", a.get("svg").c_str(), svg.size());
  return 0;
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  const std::vector<FlagSpec> spec = concat(model_flags(), {
      {"--data", "FILE", "LongBench JSONL records (LongBench's data files, or make_longctx_suite's)"},
      {"--task", "NAME", "only the records of this dataset"},
      {"--limit", "N", "at most N records per dataset (default: all)"},
      {"-c,--ctx-size", "N", "context in tokens, prompt + answer (default: the model's maximum)"},
      {"--json", "OUT", "write the results as JSON to OUT"},
      {"--ablate", nullptr, "ablation table: each component of the --kv spec switched off in turn"},
      {"--search", "METHOD", "hyper-parameter search over the KV settings: random or evolve"},
      {"--budget-ratio", "R", "search: KV bytes per token at most full / R (default 4)"},
      {"--trials", "N", "search: settings evaluated (default 8)"},
      {"--population", "N", "search evolve: random start and parent pool size (default 4)"},
      {"--seed", "S", "search: random seed (default 1)"},
      {"--policies", "LIST", "search: rank policies to try (default seed,uniform)"},
      {"--plot", "KIND", "write an SVG plot instead of evaluating: quality (from eval/search/ablate JSON) or speed "
                         "(from llm bench --json)"},
      {"--from", "FILES", "plot: comma-separated JSON inputs"},
      {"--svg", "OUT", "plot: the SVG file to write"},
      {"--title", "TEXT", "plot: the title"},
      {"--cpu-time", nullptr, "plot speed: tokens per CPU-second (bench's decode_cpu_ms_per_token) instead of wall time"},
  });
  Args a = parse_args("eval", argc, argv, spec);
  if (a.has("help")) {
    print_help("eval",
               "-m MODEL --data FILE.jsonl [--task NAME] [--kv SPEC] [--limit N] [--json OUT] [-c CTX]\n"
               "          [--ablate | --search random|evolve --budget-ratio R --trials N --seed S]\n"
               "       llm eval --plot quality|speed --from FILE[,FILE...] --svg OUT",
               spec);
    return 0;
  }
  if (!a.positional.empty()) llm::fail("llm eval: unexpected argument '", a.positional[0], "'");
  if (a.has("plot")) return run_plot(a);
  if (!a.has("data")) llm::fail("llm eval: no records: give a LongBench JSONL file with --data FILE");
  if (a.has("ablate") && a.has("search")) llm::fail("llm eval: --ablate and --search are separate runs; give one");
  const long long limit = a.get_int("limit", 0);
  if (limit < 0) llm::fail("llm eval: --limit must be >= 0, got ", limit);
  llm::EvalRunOptions ro;
  if (a.has("ctx-size")) ro.n_ctx = context_size(a, 0);

  // Records first: a bad file fails before the model loads.
  const std::vector<llm::LongBenchRecord> all = llm::longbench_read_jsonl(a.get("data"));
  const std::vector<llm::LongBenchRecord> records = llm::eval_select(all, a.get("task", ""), static_cast<size_t>(limit));
  for (const auto& r : records) {
    const llm::LongBenchDataset& d = llm::longbench_dataset(r.dataset);
    if (d.metric == llm::Metric::qa_f1_zh || d.metric == llm::Metric::rouge_zh)
      llm::fail("llm eval: record '", r.id, "' is ", r.dataset,
                ", scored with a Chinese metric that needs jieba (not implemented); leave it out with --task");
  }
  const std::string data = a.get("data");

  // ---- ablation ----
  if (a.has("ablate")) {
    const std::string full_spec = a.get("kv", "svd");
    if (full_spec == "full") llm::fail("llm eval --ablate: give the full compressed spec with --kv (e.g. --kv svd)");
    std::unique_ptr<llm::Model> probe = load_with_spec(a, "full");
    std::vector<llm::AblationRow> rows = llm::ablation_plan(full_spec, probe->config());
    size_t n_rows = 0;
    for (const auto& r : rows) n_rows += r.available;
    MaybeProgress progress(n_rows * records.size());
    llm::ablation_run(
        rows,
        [&](const std::string& s) {
          std::unique_ptr<llm::Model> m = s == "full" && probe ? std::move(probe) : load_with_spec(a, s);
          const auto runs = llm::eval_records(*m, records, ro, [&](const llm::EvalRecordRun&) { progress.step(s); });
          return llm::AblationEval{llm::eval_summarize(llm::eval_results(runs)), llm::eval_mean_kv_bytes(runs)};
        },
        [&](const llm::AblationRow& r) {
          if (!progress.p)
            std::fprintf(stderr, "llm eval --ablate: %-44s avg %6.2f  %.0f B/token  (%.1f s)\n", r.name.c_str(),
                         r.summary.average, r.kv_bytes_per_token, r.seconds);
        });
    progress.finish();
    std::printf("ablation of %s on %s (%zu records)\n%s", full_spec.c_str(), data.c_str(), records.size(),
                llm::ablation_table(rows).c_str());
    if (a.has("json")) {
      ojson j = ojson::parse(llm::ablation_json(rows));
      ojson out;
      out["model"] = a.get("model", default_model_path());
      out["data"] = data;
      out["records"] = records.size();
      out["kv"] = full_spec;
      out["rows"] = j["rows"];
      write_file(a.get("json"), out.dump(1) + "\n");
    }
    return 0;
  }

  // ---- search ----
  if (a.has("search")) {
    llm::SearchOptions so;
    so.method = llm::search_method_from_name(a.get("search"));
    so.budget_ratio = a.get_float("budget-ratio", 4.0);
    so.trials = static_cast<int>(a.get_int("trials", 8));
    so.population = static_cast<int>(a.get_int("population", 4));
    so.seed = static_cast<uint64_t>(a.get_int("seed", 1));
    std::unique_ptr<llm::Model> probe = load_with_spec(a, "full");
    llm::SearchSpace space;
    space.head_dim = probe->config().head_dim;
    if (a.has("policies")) space.policies = split_commas(a.get("policies"));
    const llm::Config cfg = probe->config();
    probe.reset();
    MaybeProgress progress(static_cast<size_t>(so.trials) * records.size());
    const llm::SearchResult res = llm::search_run(
        space, cfg, so,
        [&](const std::string& s) {
          std::unique_ptr<llm::Model> m = load_with_spec(a, s);
          const auto runs = llm::eval_records(*m, records, ro, [&](const llm::EvalRecordRun&) { progress.step(s); });
          return llm::eval_summarize(llm::eval_results(runs)).average;
        },
        [&](const llm::SearchTrial& t) {
          if (!progress.p)
            std::fprintf(stderr, "llm eval --search: %-40s score %6.2f  %.0f B/token (%.2fx)  %.1f s  [%s]\n",
                         t.spec.c_str(), t.score, t.kv_bytes_per_token, t.ratio, t.seconds, t.origin.c_str());
        });
    progress.finish();
    std::printf("%s search, seed %llu, budget 1/%.3g of the full cache (%.0f bytes per token), %zu trials on %s\n",
                llm::search_method_name(so.method), static_cast<unsigned long long>(so.seed), so.budget_ratio,
                res.full_bytes_per_token / so.budget_ratio, res.trials.size(), data.c_str());
    std::printf("%4s %-40s %8s %10s %8s\n", "#", "spec", "score", "KV B/tok", "ratio");
    for (size_t i = 0; i < res.trials.size(); ++i) {
      const auto& t = res.trials[i];
      std::printf("%4zu %-40s %8.2f %10.0f %7.2fx%s\n", i, t.spec.c_str(), t.score, t.kv_bytes_per_token, t.ratio,
                  static_cast<int>(i) == res.best ? "  <- best" : "");
    }
    if (a.has("json")) {
      ojson j = ojson::parse(llm::search_result_json(res));
      j["model"] = a.get("model", default_model_path());
      j["data"] = data;
      j["records"] = records.size();
      write_file(a.get("json"), j.dump(1) + "\n");
    }
    return 0;
  }

  // ---- one evaluation ----
  llm::Model model(a.get("model", default_model_path()), load_options(a));
  const int n_ctx = llm::eval_context(model, ro);
  MaybeProgress progress(records.size());
  const auto t0 = std::chrono::steady_clock::now();
  const auto runs = llm::eval_records(model, records, ro, [&](const llm::EvalRecordRun& r) {
    char note[96];
    std::snprintf(note, sizeof note, "%s %.2f", r.result.dataset.c_str(), r.result.score);
    progress.step(note);
  });
  progress.finish();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const llm::EvalSummary s = llm::eval_summarize(llm::eval_results(runs));
  const double kvb = llm::eval_mean_kv_bytes(runs);
  size_t truncated = 0;
  for (const auto& r : runs) truncated += r.prompt_tokens < r.full_tokens;
  std::printf("model %s | kv %s | context %d | %zu records (%zu truncated) | %.1f s | KV %.0f bytes/token\n",
              model.path().c_str(), model.kv_description().c_str(), n_ctx, runs.size(), truncated, seconds, kvb);
  std::printf("%s", llm::eval_summary_table(s).c_str());
  if (a.has("json")) {
    ojson j;
    j["model"] = model.path();
    j["data"] = data;
    j["kv"] = model.kv_description();
    j["n_ctx"] = n_ctx;
    j["seconds"] = seconds;
    j["kv_bytes_per_token"] = kvb;
    j["summary"] = ojson::parse(llm::eval_summary_json(s));
    ojson recs = ojson::array();
    for (const auto& r : runs) recs.push_back(record_json(r));
    j["records"] = recs;
    write_file(a.get("json"), j.dump(1) + "\n");
  }
  return 0;
}

}  // namespace llm_cli
