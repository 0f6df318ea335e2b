// Ablation plan, run and report (see eval/ablation.h).
#include "eval/ablation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "engine/kv_lowrank.h"
#include "eval/search.h"
#include "loader/error.h"

namespace llm {

namespace {

AblationRow not_available(const std::string& name, const std::string& why) {
  AblationRow r;
  r.name = name;
  r.available = false;
  r.note = why;
  return r;
}

AblationRow edited(const std::string& name, const KVSpecParts& p, const std::string& note) {
  AblationRow r;
  r.name = name;
  r.spec = p.components.empty() ? "full" : p.str();
  r.note = note;
  return r;
}

}  // namespace

std::vector<AblationRow> ablation_plan(const std::string& full_spec, const Config& c) {
  const KVSpecParts parts = kv_spec_split(full_spec);
  std::vector<AblationRow> rows;
  {
    AblationRow r;
    r.name = "full cache";
    r.spec = "full";
    r.note = "reference: no compression";
    rows.push_back(r);
  }
  {
    AblationRow r;
    r.name = "all on";
    r.spec = full_spec;
    r.note = "the full compressed spec";
    rows.push_back(r);
  }
  const int d = c.head_dim;
  const KVSpecComponent* svd = parts.find("svd");
  if (!svd) {
    const std::string why = "the spec has no svd component (low-rank ranks are not in use)";
    rows.push_back(not_available("no low-rank keys", why));
    rows.push_back(not_available("no low-rank values", why));
    rows.push_back(not_available("no adaptive ranks", why));
  } else {
    // the svd component alone, resolved by the engine's parser, for the ranks and the policy
    KVSpecParts only;
    only.components.push_back(*svd);
    const KVSpec s = kv_spec_parse(only.str());
    const KVRanks rk = kv_spec_ranks(s, d);
    {
      KVSpecParts p = parts;
      p.find("svd")->set("k", std::to_string(d));
      rows.push_back(rk.k == d ? not_available("no low-rank keys", "keys are already at full rank (k = head_dim)")
                               : edited("no low-rank keys", p, "keys at full rank k=" + std::to_string(d)));
    }
    {
      KVSpecParts p = parts;
      p.find("svd")->set("v", std::to_string(d));
      p.find("svd")->set("policy", "uniform");
      rows.push_back(rk.v_low == d ? not_available("no low-rank values", "values are already at full rank")
                                   : edited("no low-rank values", p, "values at full rank v=" + std::to_string(d)));
    }
    if (s.policy == KVRankPolicy::uniform) {
      rows.push_back(not_available("no adaptive ranks", "the spec already uses uniform value ranks"));
    } else {
      const double mean = 0.4 * rk.v_low + 0.4 * rk.v_med + 0.2 * rk.v_high;
      const int r = std::max(1, static_cast<int>(std::lround(mean)));
      KVSpecParts p = parts;
      p.find("svd")->set("v", std::to_string(r));
      p.find("svd")->set("policy", "uniform");
      char note[160];
      std::snprintf(note, sizeof note, "uniform value rank %d (the %s policy's mean %.1f: same bytes per token)", r,
                    kv_rank_policy_name(s.policy), mean);
      rows.push_back(edited("no adaptive ranks", p, note));
    }
  }
  // Importance terms (issue 7): weights a, b, c of score = a*A_win + b*A_cum + c*P, in the "imp" component. The
  // quant, keep and evict parts rank tokens by that score, with imp's defaults when the spec has no imp part.
  const bool uses_importance = parts.find("quant") || parts.find("keep") || parts.find("evict");
  const struct {
    const char* name;
    const char* key;
  } terms[] = {{"no importance term A_win (window attention)", "a"},
               {"no importance term A_cum (cumulative attention)", "b"},
               {"no importance term P (positional prior)", "c"}};
  for (const auto& t : terms) {
    KVSpecParts p = parts;
    KVSpecComponent* imp = p.find("imp");
    if (imp) {
      imp->set(t.key, "0");
      rows.push_back(edited(t.name, p, std::string("imp ") + t.key + "=0"));
    } else if (uses_importance) {
      p.components.push_back({"imp", {{t.key, "0", false}}});
      rows.push_back(edited(t.name, p, std::string("imp ") + t.key + "=0 (the other weights at their defaults)"));
    } else {
      rows.push_back(not_available(t.name, "no importance-ranked part (quant/keep/evict/imp) in the spec"));
    }
  }
  const std::string cpu_note = parts.find("svd") ? " (the CPU engine cannot combine svd with quant/keep/evict yet: "
                                                   "ablate those with a second spec)"
                                                 : "";
  {
    KVSpecParts p = parts;
    if (p.remove("quant"))
      rows.push_back(edited("no quantisation", p, "the quant part removed (16-bit cache)"));
    else
      rows.push_back(not_available("no quantisation", "no quant part in the spec" + cpu_note));
  }
  {
    KVSpecParts p = parts;
    if (p.remove("keep"))
      rows.push_back(edited("no propagation", p, "the keep part removed (every layer computes every token)"));
    else
      rows.push_back(not_available("no propagation", "no keep part in the spec" + cpu_note));
  }
  {
    KVSpecParts p = parts;
    if (p.remove("evict")) rows.push_back(edited("no eviction", p, "the evict part removed"));
  }
  return rows;
}

void ablation_run(std::vector<AblationRow>& rows, const std::function<AblationEval(const std::string& spec)>& eval,
                  const std::function<void(const AblationRow&)>& on_row) {
  for (auto& r : rows) {
    if (!r.available) continue;
    const auto t0 = std::chrono::steady_clock::now();
    const AblationEval e = eval(r.spec);
    r.summary = e.summary;
    r.kv_bytes_per_token = e.kv_bytes_per_token;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.done = true;
    if (on_row) on_row(r);
  }
}

namespace {
const AblationRow* row_named(const std::vector<AblationRow>& rows, const char* name) {
  for (const auto& r : rows)
    if (r.name == name && r.done) return &r;
  return nullptr;
}
}  // namespace

std::string ablation_table(const std::vector<AblationRow>& rows) {
  const AblationRow* all = row_named(rows, "all on");
  const AblationRow* full = row_named(rows, "full cache");
  std::vector<std::string> tasks;
  for (const auto& r : rows)
    for (const auto& t : r.summary.tasks)
      if (std::find(tasks.begin(), tasks.end(), t.dataset) == tasks.end()) tasks.push_back(t.dataset);
  std::string out;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-48s", "component switched off");
  out += buf;
  for (const auto& t : tasks) {
    std::snprintf(buf, sizeof buf, " %12.12s", t.c_str());
    out += buf;
  }
  out += "      avg    delta  KV B/tok  reduction  spec\n";
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "%-48s", r.name.c_str());
    out += buf;
    if (!r.available || !r.done) {
      out += "  not available: " + r.note + "\n";
      continue;
    }
    for (const auto& t : tasks) {
      auto it = std::find_if(r.summary.tasks.begin(), r.summary.tasks.end(), [&](const auto& x) { return x.dataset == t; });
      if (it == r.summary.tasks.end()) std::snprintf(buf, sizeof buf, " %12s", "-");
      else std::snprintf(buf, sizeof buf, " %12.2f", it->score);
      out += buf;
    }
    const double red = full && r.kv_bytes_per_token > 0 ? full->kv_bytes_per_token / r.kv_bytes_per_token : 0.0;
    if (all && &r != all) std::snprintf(buf, sizeof buf, " %8.2f %+8.2f", r.summary.average, r.summary.average - all->summary.average);
    else std::snprintf(buf, sizeof buf, " %8.2f %8s", r.summary.average, "");
    out += buf;
    std::snprintf(buf, sizeof buf, " %9.0f %9.2fx  ", r.kv_bytes_per_token, red);
    out += buf;
    out += r.spec + "\n";
  }
  return out;
}

std::string ablation_json(const std::vector<AblationRow>& rows) {
  const AblationRow* all = row_named(rows, "all on");
  const AblationRow* full = row_named(rows, "full cache");
  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  for (const auto& r : rows) {
    nlohmann::ordered_json o;
    o["component"] = r.name;
    o["available"] = r.available;
    o["note"] = r.note;
    if (r.available) o["spec"] = r.spec;
    if (r.done) {
      o["summary"] = nlohmann::ordered_json::parse(eval_summary_json(r.summary));
      o["average"] = r.summary.average;
      if (all) o["delta_vs_all_on"] = r.summary.average - all->summary.average;
      o["kv_bytes_per_token"] = r.kv_bytes_per_token;
      if (full && r.kv_bytes_per_token > 0) o["reduction"] = full->kv_bytes_per_token / r.kv_bytes_per_token;
      o["seconds"] = r.seconds;
    }
    arr.push_back(o);
  }
  nlohmann::ordered_json j;
  j["rows"] = arr;
  return j.dump();
}

}  // namespace llm
