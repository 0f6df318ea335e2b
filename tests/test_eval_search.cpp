// Spec editing, the KV memory model, the seeded search (on synthetic objectives: no model needed) and the
// ablation plan.
#include <doctest/doctest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "eval/ablation.h"
#include "eval/search.h"
#include "loader/error.h"

namespace {

llm::Config smollm_config() {  // SmolLM2-135M's attention shape
  llm::Config c;
  c.n_layers = 30;
  c.n_heads = 9;
  c.n_kv_heads = 3;
  c.head_dim = 64;
  c.dim = 576;
  return c;
}

}  // namespace

TEST_CASE("kv_spec_split: round trip and edits") {
  llm::KVSpecParts p = llm::kv_spec_split("svd:k=16,v=16/32/64,policy=seed+quant:bits=8/4/2+keep");
  REQUIRE(p.components.size() == 3);
  CHECK(p.components[0].name == "svd");
  CHECK(*p.components[0].get("v") == "16/32/64");
  CHECK(p.components[2].fields.empty());
  CHECK(p.str() == "svd:k=16,v=16/32/64,policy=seed+quant:bits=8/4/2+keep");
  p.find("svd")->set("k", "64");
  p.find("svd")->set("basis", "calib");
  CHECK(p.remove("quant"));
  CHECK(!p.remove("quant"));
  CHECK(p.str() == "svd:k=64,v=16/32/64,policy=seed,basis=calib+keep");
  CHECK(llm::kv_spec_split("full").str() == "full");
  // issue 7's grammar: bare fields and keys with '/'
  llm::KVSpecParts q = llm::kv_spec_split("quant:8/4/2=0.2/0.5/0.3,recent=32+keep:0.5,pyramid,from=8");
  CHECK(q.components[0].fields[0].key == "8/4/2");
  CHECK(q.components[1].fields[0].bare);
  CHECK(*q.components[1].get("from") == "8");
  CHECK(q.components[1].get("pyramid") == nullptr);
  CHECK(q.str() == "quant:8/4/2=0.2/0.5/0.3,recent=32+keep:0.5,pyramid,from=8");
  CHECK_THROWS_WITH_AS(llm::kv_spec_split("svd:k=1,"), doctest::Contains("empty field"), llm::Error);
  CHECK_THROWS_WITH_AS(llm::kv_spec_split("svd++quant"), doctest::Contains("empty component"), llm::Error);
  CHECK_THROWS_AS(llm::kv_spec_split(""), llm::Error);
}

TEST_CASE("kv_spec_bytes_per_token: the engine's layout, by hand") {
  const llm::Config c = smollm_config();
  // full: 2 (K and V) * 30 layers * 3 heads * 64 dims * 2 bytes (16-bit)
  CHECK(llm::kv_full_bytes_per_token(c) == 2.0 * 30 * 3 * 64 * 2);
  CHECK(llm::kv_spec_bytes_per_token("full", c) == 23040.0);
  // k=16, seed v 16/32/64: mean v = 0.4*16 + 0.4*32 + 0.2*64 = 32 -> (16 + 32) * 30 * 3 * 2
  CHECK(llm::kv_spec_bytes_per_token("svd:k=16,v=16/32/64,policy=seed", c) == doctest::Approx(48.0 * 180));
  CHECK(llm::kv_spec_bytes_per_token("svd:k=8,v=24,policy=uniform", c) == doctest::Approx(32.0 * 180));
  CHECK(llm::kv_bytes_16bit("full", 46080.0) == 23040.0);
  CHECK(llm::kv_bytes_16bit("svd:k=16,v=16/32/64,policy=seed,basis=weights", 100.0) == 50.0);
  CHECK(llm::kv_bytes_16bit("full+quant:8/4/2=0.2/0.5/0.3", 100.0) == 100.0);
  CHECK(llm::kv_bytes_16bit("svd:k=16,v=16,policy=uniform,basis=weights+quant:4", 100.0) == 100.0);  // unified
  CHECK_THROWS_WITH_AS(llm::kv_spec_bytes_per_token("svd:k=8+quant:bits=4", c), doctest::Contains("not modelled"),
                       llm::Error);
}

TEST_CASE("search: reproducible by seed, within the budget, no setting twice") {
  const llm::Config c = smollm_config();
  llm::SearchSpace space;
  space.head_dim = 64;
  // A synthetic objective: more rank is better, keys count double; deterministic.
  auto objective = [](const std::string& spec) {
    llm::KVSpecParts p = llm::kv_spec_split(spec);
    const auto* svd = p.find("svd");
    int k = std::stoi(*svd->get("k"));
    std::string v = *svd->get("v");
    int vh = std::stoi(v.substr(v.rfind('/') == std::string::npos ? 0 : v.rfind('/') + 1));
    return 2.0 * k + vh + (*svd->get("policy") == "seed" ? 1.0 : 0.0);
  };
  for (auto method : {llm::SearchMethod::random, llm::SearchMethod::evolve}) {
    CAPTURE(llm::search_method_name(method));
    llm::SearchOptions o;
    o.method = method;
    o.trials = 12;
    o.seed = 42;
    o.budget_ratio = 4.0;
    const llm::SearchResult a = llm::search_run(space, c, o, objective);
    const llm::SearchResult b = llm::search_run(space, c, o, objective);
    REQUIRE(a.trials.size() == 12);
    std::set<std::string> specs;
    for (size_t i = 0; i < a.trials.size(); ++i) {
      CHECK(a.trials[i].spec == b.trials[i].spec);
      CHECK(a.trials[i].kv_bytes_per_token <= 23040.0 / 4.0 + 1e-9);
      CHECK(a.trials[i].ratio >= 4.0 - 1e-9);
      specs.insert(a.trials[i].spec);
    }
    CHECK(specs.size() == a.trials.size());
    REQUIRE(a.best >= 0);
    for (const auto& t : a.trials) CHECK(t.score <= a.trials[static_cast<size_t>(a.best)].score);
    o.seed = 43;
    const llm::SearchResult d = llm::search_run(space, c, o, objective);
    bool differs = false;
    for (size_t i = 0; i < d.trials.size(); ++i) differs = differs || d.trials[i].spec != a.trials[i].spec;
    CHECK(differs);
    // JSON is well formed and carries the trials
    nlohmann::json j = nlohmann::json::parse(llm::search_result_json(a));
    CHECK(j["trials"].size() == 12);
    CHECK(j["best_spec"] == a.trials[static_cast<size_t>(a.best)].spec);
    CHECK(j["method"] == llm::search_method_name(method));
  }
}

TEST_CASE("search: evolution beats its own random start on a smooth objective") {
  const llm::Config c = smollm_config();
  llm::SearchSpace space;
  space.head_dim = 64;
  space.policies = {"uniform"};
  // peak at k=24, v=32 (both fit 1/2 of the full cache: (24 + 32) * 180 = 10080 <= 11520)
  auto objective = [](const std::string& spec) {
    llm::KVSpecParts p = llm::kv_spec_split(spec);
    int k = std::stoi(*p.find("svd")->get("k")), v = std::stoi(*p.find("svd")->get("v"));
    return 100.0 - std::abs(k - 24) - std::abs(v - 32);
  };
  llm::SearchOptions o;
  o.method = llm::SearchMethod::evolve;
  o.trials = 40;
  o.population = 4;
  o.seed = 7;
  o.budget_ratio = 2.0;
  const llm::SearchResult r = llm::search_run(space, c, o, objective);
  double best_random = -1e9;
  for (int i = 0; i < 4; ++i) best_random = std::max(best_random, r.trials[static_cast<size_t>(i)].score);
  CHECK(r.trials[static_cast<size_t>(r.best)].score > best_random);
  CHECK(r.trials[static_cast<size_t>(r.best)].score >= 96.0);
  size_t mutations = 0;
  for (const auto& t : r.trials) mutations += t.origin.rfind("mutation", 0) == 0;
  CHECK(mutations >= 20);
}

TEST_CASE("search: errors") {
  const llm::Config c = smollm_config();
  llm::SearchSpace space;
  space.head_dim = 64;
  auto obj = [](const std::string&) { return 0.0; };
  llm::SearchOptions o;
  o.budget_ratio = 1000;  // smallest setting (4 + 4) * 180 = 1440 > 23040 / 1000
  CHECK_THROWS_WITH_AS(llm::search_run(space, c, o, obj), doctest::Contains("no setting fits"), llm::Error);
  o.budget_ratio = 0.5;
  CHECK_THROWS_WITH_AS(llm::search_run(space, c, o, obj), doctest::Contains("budget-ratio"), llm::Error);
  o.budget_ratio = 2;
  o.trials = 0;
  CHECK_THROWS_AS(llm::search_run(space, c, o, obj), llm::Error);
  CHECK_THROWS_WITH_AS(llm::search_method_from_name("bayes"), doctest::Contains("random or evolve"), llm::Error);
  // a tiny space runs dry: it stops early rather than repeating a setting
  space.step = 32;  // ranks 32 or 64
  space.policies = {"uniform"};
  o.trials = 50;
  o.budget_ratio = 1.0;
  CHECK(llm::search_run(space, c, o, obj).trials.size() == 4);  // k, v in {32, 64}
}

TEST_CASE("ablation_plan: each component, and unavailable ones said so") {
  const llm::Config c = smollm_config();
  std::vector<llm::AblationRow> rows = llm::ablation_plan("svd:k=16,v=16/32/64,policy=seed", c);
  std::map<std::string, const llm::AblationRow*> by;
  for (const auto& r : rows) by[r.name] = &r;
  REQUIRE(rows.size() == 10);
  CHECK(rows[0].spec == "full");
  CHECK(rows[1].spec == "svd:k=16,v=16/32/64,policy=seed");
  CHECK(by["no low-rank keys"]->spec == "svd:k=64,v=16/32/64,policy=seed");
  CHECK(by["no low-rank values"]->spec == "svd:k=16,v=64,policy=uniform");
  CHECK(by["no adaptive ranks"]->spec == "svd:k=16,v=32,policy=uniform");  // the seed policy's mean rank
  CHECK(!by["no quantisation"]->available);
  CHECK(by["no quantisation"]->note.find("no quant part in the spec") != std::string::npos);
  CHECK(!by["no propagation"]->available);
  CHECK(!by["no importance term A_win (window attention)"]->available);
  // issue 7's parts are switched off by editing the spec
  rows = llm::ablation_plan("quant:8/4/2=0.2/0.5/0.3,recent=32+keep:0.5,pyramid+imp:a=1,b=0.5,c=0.2", c);
  by.clear();
  for (const auto& r : rows) by[r.name] = &r;
  CHECK(!by["no low-rank keys"]->available);
  CHECK(by["no quantisation"]->spec == "keep:0.5,pyramid+imp:a=1,b=0.5,c=0.2");
  CHECK(by["no propagation"]->spec == "quant:8/4/2=0.2/0.5/0.3,recent=32+imp:a=1,b=0.5,c=0.2");
  CHECK(by["no importance term A_cum (cumulative attention)"]->spec ==
        "quant:8/4/2=0.2/0.5/0.3,recent=32+keep:0.5,pyramid+imp:a=1,b=0,c=0.2");
  CHECK(by.count("no eviction") == 0);
  // without an imp part, the default weights are in use: the ablation adds the one weight at 0
  rows = llm::ablation_plan("full+quant:8/4=0.5/0.5+evict:snapkv,budget=0.3", c);
  by.clear();
  for (const auto& r : rows) by[r.name] = &r;
  CHECK(by["no importance term P (positional prior)"]->spec == "full+quant:8/4=0.5/0.5+evict:snapkv,budget=0.3+imp:c=0");
  CHECK(by["no quantisation"]->spec == "full+evict:snapkv,budget=0.3");
  CHECK(by["no eviction"]->spec == "full+quant:8/4=0.5/0.5");
  CHECK(!by["no propagation"]->available);
  // removing the only part leaves the full cache
  rows = llm::ablation_plan("quant:8/4=0.5/0.5", c);
  by.clear();
  for (const auto& r : rows) by[r.name] = &r;
  CHECK(by["no quantisation"]->spec == "full");
}

TEST_CASE("ablation_run / table / json") {
  const llm::Config c = smollm_config();
  std::vector<llm::AblationRow> rows = llm::ablation_plan("svd:k=16,v=16/32/64", c);
  int calls = 0;
  llm::ablation_run(rows, [&](const std::string& spec) {
    ++calls;
    llm::EvalRecordResult r;
    r.dataset = "passkey";
    r.score = spec == "full" ? 1.0 : 0.5;
    return llm::AblationEval{llm::eval_summarize({r}), spec == "full" ? 23040.0 : 8640.0};
  });
  CHECK(calls == 5);  // full, all on, keys, values, adaptive
  const std::string t = llm::ablation_table(rows);
  CHECK(t.find("not available") != std::string::npos);
  CHECK(t.find("2.67x") != std::string::npos);
  nlohmann::json j = nlohmann::json::parse(llm::ablation_json(rows));
  CHECK(j["rows"].size() == rows.size());
  CHECK(j["rows"][0]["average"] == 100.0);
  CHECK(j["rows"][2]["delta_vs_all_on"] == 0.0);
  CHECK(j["rows"][9]["available"] == false);
}
