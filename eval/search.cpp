// Spec-string editing, the KV memory model and the seeded random / evolutionary search (see eval/search.h).
#include "eval/search.h"

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "engine/kv_lowrank.h"
#include "loader/error.h"

namespace llm {

// ---- spec strings ----

const std::string* KVSpecComponent::get(const std::string& key) const {
  for (const auto& f : fields)
    if (!f.bare && f.key == key) return &f.value;
  return nullptr;
}

void KVSpecComponent::set(const std::string& key, const std::string& value) {
  for (auto& f : fields)
    if (!f.bare && f.key == key) {
      f.value = value;
      return;
    }
  fields.push_back({key, value, false});
}

void KVSpecComponent::erase(const std::string& key) {
  fields.erase(std::remove_if(fields.begin(), fields.end(), [&](const auto& f) { return f.key == key; }),
               fields.end());
}

KVSpecComponent* KVSpecParts::find(const std::string& name) {
  for (auto& c : components)
    if (c.name == name) return &c;
  return nullptr;
}
const KVSpecComponent* KVSpecParts::find(const std::string& name) const {
  for (const auto& c : components)
    if (c.name == name) return &c;
  return nullptr;
}

bool KVSpecParts::remove(const std::string& name) {
  auto it = std::find_if(components.begin(), components.end(), [&](const auto& c) { return c.name == name; });
  if (it == components.end()) return false;
  components.erase(it);
  return true;
}

std::string KVSpecParts::str() const {
  std::string out;
  for (size_t i = 0; i < components.size(); ++i) {
    if (i) out += "+";
    out += components[i].name;
    for (size_t j = 0; j < components[i].fields.size(); ++j) {
      const KVSpecField& f = components[i].fields[j];
      out.append(j ? "," : ":").append(f.key);
      if (!f.bare) out.append("=").append(f.value);
    }
  }
  return out;
}

static std::vector<std::string> split_on(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t p = s.find(sep, start);
    out.push_back(s.substr(start, p == std::string::npos ? std::string::npos : p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

KVSpecParts kv_spec_split(const std::string& spec) {
  if (spec.empty()) fail("KV spec: empty (give e.g. full or svd:k=16,v=16/32/64)");
  KVSpecParts parts;
  for (const std::string& comp : split_on(spec, '+')) {
    if (comp.empty()) fail("KV spec '", spec, "': an empty component (two '+' in a row, or one at an end)");
    KVSpecComponent c;
    const size_t colon = comp.find(':');
    c.name = comp.substr(0, colon);
    if (c.name.empty()) fail("KV spec '", spec, "': a component without a name before ':'");
    if (colon != std::string::npos) {
      for (const std::string& f : split_on(comp.substr(colon + 1), ',')) {
        if (f.empty()) fail("KV spec '", spec, "': an empty field in component '", c.name, "'");
        const size_t eq = f.find('=');
        if (eq == std::string::npos) c.fields.push_back({f, "", true});
        else c.fields.push_back({f.substr(0, eq), f.substr(eq + 1), false});
      }
    }
    parts.components.push_back(std::move(c));
  }
  return parts;
}

// ---- memory model ----

double kv_full_bytes_per_token(const Config& c) { return 2.0 * c.n_layers * c.n_kv_heads * c.head_dim * 2; }

double kv_bytes_16bit(const std::string& description, double engine_bytes) {
  // the plain low-rank cache counts fp32 as stored; the unified svd+prefill cache ("svd:...+...") counts 16 bits
  const bool fp32_cache =
      description == "full" || (description.rfind("svd", 0) == 0 && description.find('+') == std::string::npos);
  return fp32_cache ? engine_bytes / 2 : engine_bytes;
}

double kv_spec_bytes_per_token(const std::string& spec, const Config& c) {
  const KVSpecParts parts = kv_spec_split(spec);
  for (const auto& comp : parts.components)
    if (comp.name != "svd" && comp.name != "full")
      fail("KV memory model: component '", comp.name, "' of '", spec,
           "' is not modelled (only full and svd are); run `llm eval --kv ...` and read the measured "
           "kv_bytes_per_token in its JSON");
  const KVSpec s = kv_spec_parse(spec);
  if (!s.lowrank) return kv_full_bytes_per_token(c);
  const KVRanks r = kv_spec_ranks(s, c.head_dim);
  const double mean_v = s.policy == KVRankPolicy::uniform ? r.v_high : 0.4 * r.v_low + 0.4 * r.v_med + 0.2 * r.v_high;
  return kv_bytes_per_token(c, r.k, mean_v, 2).compressed;
}

// ---- search ----

SearchMethod search_method_from_name(const std::string& name) {
  if (name == "random") return SearchMethod::random;
  if (name == "evolve") return SearchMethod::evolve;
  fail("search method '", name, "': expected random or evolve");
}
const char* search_method_name(SearchMethod m) { return m == SearchMethod::random ? "random" : "evolve"; }

std::string SearchConfig::spec(const SearchSpace& s) const {
  std::string out = "svd:k=" + std::to_string(k) + ",v=";
  if (policy == "uniform") out += std::to_string(v_high);
  else out += std::to_string(v_low) + "/" + std::to_string(v_med) + "/" + std::to_string(v_high);
  out += ",policy=" + policy;
  if (!s.svd_extra.empty()) out += "," + s.svd_extra;
  return out + s.extra;
}

namespace {

// splitmix64: the same sequence on every platform (std's distributions are not specified bit-for-bit).
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  int below(int n) { return static_cast<int>(next() % static_cast<uint64_t>(n)); }
};

struct Space {
  const SearchSpace& s;
  int step, levels;  // ranks are step * (1..levels)
  Space(const SearchSpace& sp) : s(sp) {
    step = sp.step > 0 ? sp.step : std::max(1, sp.head_dim / 16);
    levels = sp.head_dim / step;
    if (levels < 1) fail("search: the rank step ", step, " exceeds head_dim ", sp.head_dim);
    if (sp.policies.empty()) fail("search: no rank policy to search over");
  }
  // canonical form: ascending value ranks; uniform keeps one rank (low = med = high)
  SearchConfig canon(SearchConfig c) const {
    auto clamp = [&](int r) { return std::clamp(r, step, levels * step); };
    c.k = clamp(c.k);
    c.v_low = clamp(c.v_low), c.v_med = clamp(c.v_med), c.v_high = clamp(c.v_high);
    int v[3] = {c.v_low, c.v_med, c.v_high};
    std::sort(v, v + 3);
    c.v_low = v[0], c.v_med = v[1], c.v_high = v[2];
    if (c.policy == "uniform") c.v_low = c.v_med = c.v_high;
    return c;
  }
  SearchConfig random(Rng& g) const {
    SearchConfig c;
    c.policy = s.policies[static_cast<size_t>(g.below(static_cast<int>(s.policies.size())))];
    c.k = step * (1 + g.below(levels));
    c.v_low = step * (1 + g.below(levels));
    c.v_med = step * (1 + g.below(levels));
    c.v_high = step * (1 + g.below(levels));
    return canon(c);
  }
  SearchConfig mutate(SearchConfig c, Rng& g) const {
    const int n_genes = s.policies.size() > 1 ? 5 : 4;
    const int gene = g.below(n_genes);
    const int delta = (g.below(2) ? 1 : -1) * step * (1 + g.below(2));
    switch (gene) {
      case 0: c.k += delta; break;
      case 1: c.v_low += delta; break;
      case 2: c.v_med += delta; break;
      case 3:
        c.v_high += delta;
        if (c.policy == "uniform") c.v_low = c.v_med = c.v_high;
        break;
      default: {
        std::string p;
        do p = s.policies[static_cast<size_t>(g.below(static_cast<int>(s.policies.size())))];
        while (p == c.policy);
        if (c.policy == "uniform") c.v_low = c.v_med = c.v_high;  // a uniform rank seeds all three levels
        c.policy = p;
      }
    }
    return canon(c);
  }
};

}  // namespace

SearchResult search_run(const SearchSpace& space, const Config& c, const SearchOptions& o,
                        const std::function<double(const std::string& spec)>& objective,
                        const std::function<void(const SearchTrial&)>& on_trial) {
  if (o.trials < 1) fail("search: --trials must be >= 1, got ", o.trials);
  if (!(o.budget_ratio >= 1.0)) fail("search: --budget-ratio must be >= 1 (full / compressed bytes), got ", o.budget_ratio);
  if (o.population < 1) fail("search: the population must be >= 1, got ", o.population);
  if (space.head_dim != c.head_dim)
    fail("search: the space's head_dim ", space.head_dim, " differs from the model's ", c.head_dim);
  const Space sp(space);
  SearchResult res;
  res.options = o;
  res.full_bytes_per_token = kv_full_bytes_per_token(c);
  const double budget = res.full_bytes_per_token / o.budget_ratio;
  auto bytes = [&](const SearchConfig& x) { return kv_spec_bytes_per_token(x.spec(space), c); };
  auto fits = [&](const SearchConfig& x) { return bytes(x) <= budget * (1 + 1e-12); };
  auto seen = [&](const SearchConfig& x) {
    return std::any_of(res.trials.begin(), res.trials.end(), [&](const auto& t) { return t.config == x; });
  };
  // The smallest setting must fit, or nothing does.
  {
    SearchConfig smallest{sp.step, sp.step, sp.step, sp.step, space.policies[0]};
    bool any = false;
    for (const auto& p : space.policies) {
      smallest.policy = p;
      any = any || fits(sp.canon(smallest));
    }
    if (!any)
      fail("search: no setting fits the budget of 1/", o.budget_ratio, " of the full cache (", budget,
           " bytes per token); the smallest ranks give ", bytes(sp.canon(smallest)), "; lower --budget-ratio");
  }
  Rng g{o.seed};
  auto better = [&](const SearchTrial& a, const SearchTrial& b) {  // a ranks above b
    if (a.score != b.score) return a.score > b.score;
    return a.kv_bytes_per_token < b.kv_bytes_per_token;
  };
  constexpr int kTries = 2000;  // draws per trial before giving up on finding a new feasible setting
  for (int t = 0; t < o.trials; ++t) {
    SearchConfig x;
    std::string origin = "random";
    bool found = false;
    const bool use_random = o.method == SearchMethod::random || t < o.population;
    for (int tries = 0; tries < kTries && !found; ++tries) {
      if (use_random || tries >= kTries / 2) {  // evolve falls back to a random draw when mutations run dry
        x = sp.random(g);
        origin = "random";
      } else {
        // binary tournament among the best `population` trials so far
        std::vector<int> idx(res.trials.size());
        for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int>(i);
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return better(res.trials[a], res.trials[b]); });
        const int pool = std::min<int>(o.population, static_cast<int>(idx.size()));
        const int a = idx[static_cast<size_t>(g.below(pool))], b = idx[static_cast<size_t>(g.below(pool))];
        const int parent = better(res.trials[a], res.trials[b]) || a == b ? a : b;
        x = sp.mutate(res.trials[static_cast<size_t>(parent)].config, g);
        origin = "mutation of #" + std::to_string(parent);
      }
      found = fits(x) && !seen(x);
    }
    if (!found) break;  // the feasible space is exhausted
    SearchTrial tr;
    tr.config = x;
    tr.spec = x.spec(space);
    tr.origin = origin;
    tr.kv_bytes_per_token = bytes(x);
    tr.ratio = res.full_bytes_per_token / tr.kv_bytes_per_token;
    const auto t0 = std::chrono::steady_clock::now();
    tr.score = objective(tr.spec);
    tr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    res.trials.push_back(tr);
    if (res.best < 0 || better(tr, res.trials[static_cast<size_t>(res.best)])) res.best = static_cast<int>(res.trials.size()) - 1;
    if (on_trial) on_trial(res.trials.back());
  }
  return res;
}

std::string search_result_json(const SearchResult& r) {
  nlohmann::ordered_json j;
  j["method"] = search_method_name(r.options.method);
  j["seed"] = r.options.seed;
  j["budget_ratio"] = r.options.budget_ratio;
  j["trials_requested"] = r.options.trials;
  j["population"] = r.options.population;
  j["full_kv_bytes_per_token"] = r.full_bytes_per_token;
  nlohmann::ordered_json trials = nlohmann::ordered_json::array();
  for (const auto& t : r.trials) {
    nlohmann::ordered_json o;
    o["spec"] = t.spec;
    o["score"] = t.score;
    o["kv_bytes_per_token"] = t.kv_bytes_per_token;
    o["ratio"] = t.ratio;
    o["seconds"] = t.seconds;
    o["origin"] = t.origin;
    trials.push_back(o);
  }
  j["trials"] = trials;
  j["best"] = r.best >= 0 ? nlohmann::ordered_json(r.best) : nlohmann::ordered_json(nullptr);
  if (r.best >= 0) j["best_spec"] = r.trials[static_cast<size_t>(r.best)].spec;
  return j.dump();
}

}  // namespace llm
