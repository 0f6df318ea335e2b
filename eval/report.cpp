// Score aggregation as LongBench's eval.py reports it (per dataset: round(100 * mean, 2); LongBench-E per length
// bucket), and a progress line with an ETA.
#include "eval/report.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

namespace llm {
namespace {

// Python's round(x, 2) rounds the exact binary value half to even; this rounds x * 100 half away from zero. They can
// differ only on exact ties, which a mean of scores practically never is.
double round2(double x) { return std::round(x * 100.0) / 100.0; }

int bucket_index(int64_t length) { return length < 4000 ? 0 : length < 8000 ? 1 : 2; }

std::string clock_str(double seconds) {
  long s = std::lround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

}  // namespace

EvalSummary eval_summarize(const std::vector<EvalRecordResult>& results) {
  EvalSummary s;
  std::vector<double> sums, bucket_sums;
  for (const auto& r : results) {
    auto it = std::find_if(s.tasks.begin(), s.tasks.end(), [&](const auto& t) { return t.dataset == r.dataset; });
    if (it == s.tasks.end()) {
      s.tasks.push_back({});
      s.tasks.back().dataset = r.dataset;
      sums.push_back(0.0);
      bucket_sums.insert(bucket_sums.end(), {0.0, 0.0, 0.0});
      it = s.tasks.end() - 1;
    }
    size_t k = static_cast<size_t>(it - s.tasks.begin());
    int b = bucket_index(r.length);
    ++it->n;
    ++it->bucket_n[b];
    sums[k] += r.score;
    bucket_sums[3 * k + static_cast<size_t>(b)] += r.score;
  }
  double total = 0.0;
  for (size_t k = 0; k < s.tasks.size(); ++k) {
    auto& t = s.tasks[k];
    t.score = round2(100.0 * sums[k] / static_cast<double>(t.n));
    for (int b = 0; b < 3; ++b) {
      double sum = bucket_sums[3 * k + static_cast<size_t>(b)];
      t.bucket_score[b] = t.bucket_n[b] ? round2(100.0 * sum / static_cast<double>(t.bucket_n[b])) : 0.0;
    }
    total += t.score;
  }
  s.average = s.tasks.empty() ? 0.0 : round2(total / static_cast<double>(s.tasks.size()));
  return s;
}

std::string eval_summary_table(const EvalSummary& s) {
  std::string out;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%-22s %6s %8s %8s %8s %8s\n", "dataset", "n", "score", "0-4k", "4-8k", "8k+");
  out += buf;
  auto cell = [](size_t n, double v) {
    char c[16];
    if (n) std::snprintf(c, sizeof c, " %8.2f", v);
    else std::snprintf(c, sizeof c, " %8s", "-");
    return std::string(c);
  };
  for (const auto& t : s.tasks) {
    std::snprintf(buf, sizeof buf, "%-22s %6zu %8.2f", t.dataset.c_str(), t.n, t.score);
    out += buf;
    for (int b = 0; b < 3; ++b) out += cell(t.bucket_n[b], t.bucket_score[b]);
    out += "\n";
  }
  std::snprintf(buf, sizeof buf, "%-22s %6s %8.2f\n", "average", "", s.average);
  out += buf;
  return out;
}

std::string eval_summary_json(const EvalSummary& s) {
  nlohmann::ordered_json j, tasks = nlohmann::ordered_json::object();
  const char* names[3] = {"0-4k", "4-8k", "8k+"};
  for (const auto& t : s.tasks) {
    nlohmann::ordered_json o;
    o["n"] = t.n;
    o["score"] = t.score;
    for (int b = 0; b < 3; ++b)
      o[names[b]] = t.bucket_n[b] ? nlohmann::ordered_json(t.bucket_score[b]) : nlohmann::ordered_json(nullptr);
    tasks[t.dataset] = o;
  }
  j["tasks"] = tasks;
  j["average"] = s.average;
  return j.dump();
}

std::string Progress::line(const std::string& note) const {
  constexpr int width = 24;
  double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
  int filled = static_cast<int>(frac * width);
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Built with append: GCC 12 reports a false -Wrestrict on chains of std::string operator+.
  std::string out = "[";
  out.append(static_cast<size_t>(filled), '#').append(static_cast<size_t>(width - filled), '.').append("]");
  char buf[96];
  std::snprintf(buf, sizeof buf, " %zu/%zu %3d%% %s", done, total, static_cast<int>(frac * 100),
                clock_str(elapsed).c_str());
  out.append(buf);
  if (done > 0 && done < total)  // ETA from the mean time per item so far
    out.append(" ETA ").append(clock_str(elapsed / static_cast<double>(done) * static_cast<double>(total - done)));
  if (!note.empty()) out.append(" ").append(note);
  return out;
}

void Progress::step(const std::string& note) {
  ++done;
  auto now = std::chrono::steady_clock::now();
  if (done < total && now - last_print < std::chrono::milliseconds(100)) return;
  last_print = now;
  std::fprintf(out, "\r%s\x1b[K", line(note).c_str());
  std::fflush(out);
}

void Progress::finish() {
  std::fprintf(out, "\r%s\x1b[K\n", line("").c_str());
  std::fflush(out);
}

}  // namespace llm
