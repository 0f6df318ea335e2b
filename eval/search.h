// Hyper-parameter search over the KV-compression settings (issue 8): random and evolutionary, seeded and
// reproducible, objective = task score under a KV memory budget (full-cache bytes per token / budget_ratio).
//
// Settings are `--kv` spec strings (whatever the engine's kv_spec_parse accepts; docs/kv-compression.md). This
// file also holds the small spec-string editor the ablation table uses: a spec is components joined by '+', each
// "name" or "name:key=value,key=value" ("svd:k=16,v=16/32/64,policy=seed+quant:bits=8/4/2"). The editor does not
// know the keys' meaning; the engine checks the edited spec when the model is loaded with it. A field without '='
// (issue 7's "keep:0.5,pyramid") is kept as a bare field (key = its text, no value).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "loader/config.h"

namespace llm {

// ---- spec strings ----
struct KVSpecField {
  std::string key, value;
  bool bare = false;  // written without '=' (then value is empty)
  bool operator==(const KVSpecField&) const = default;
};
struct KVSpecComponent {
  std::string name;                 // "svd", "quant", ...
  std::vector<KVSpecField> fields;  // in order
  const std::string* get(const std::string& key) const;    // nullptr when absent
  void set(const std::string& key, const std::string& value);  // replaces in place, or appends
  void erase(const std::string& key);
};
struct KVSpecParts {
  std::vector<KVSpecComponent> components;
  KVSpecComponent* find(const std::string& name);  // nullptr when absent
  const KVSpecComponent* find(const std::string& name) const;
  bool remove(const std::string& name);            // false when absent
  std::string str() const;                          // back to a spec string
};
// Throws for an empty spec, an empty component or an empty field.
KVSpecParts kv_spec_split(const std::string& spec);

// ---- memory model ----
// KV-cache bytes per token for a spec on a config, over a prompt, at 16 bits per unquantised value (the CUDA
// layout and the unit of issue 7's byte counts): "full" = 2 * layers * kv_heads * head_dim * 2; svd = layers *
// kv_heads * (r_k + mean value rank) * 2, the mean value rank being 0.4 low + 0.4 medium + 0.2 high under the seed
// and importance policies (their 40/40/20 prefill split) and the one rank under uniform. Throws for a component
// this model does not know (quant/keep/evict: measure them with `llm eval`, whose JSON has kv_bytes_per_token).
double kv_spec_bytes_per_token(const std::string& spec, const Config& c);
double kv_full_bytes_per_token(const Config& c);
// Session::kv_cache_bytes() in the same 16-bit unit: the full and svd caches of the CPU engine store fp32 (half
// it), issue 7's prefill caches already count 16-bit values at 2 bytes. `description` is Model::kv_description().
double kv_bytes_16bit(const std::string& description, double engine_bytes);

// ---- the search ----
enum class SearchMethod { random, evolve };
SearchMethod search_method_from_name(const std::string& name);  // "random" | "evolve"
const char* search_method_name(SearchMethod m);

// The space searched: svd specs with k and value ranks on a grid (multiples of `step` up to head_dim) and the
// named policies. basis / extra components (`suffix`, e.g. ",basis=calib" is not allowed; use `extra` for
// "+quant:..." once the engine has it) are appended as given.
struct SearchSpace {
  int head_dim = 64;
  int step = 0;  // 0: head_dim / 16 (at least 1)
  std::vector<std::string> policies = {"seed", "uniform"};
  std::string svd_extra;  // appended inside the svd component, e.g. "basis=calib" (empty: none)
  std::string extra;      // appended components, e.g. "+quant:..." (empty: none)
};

struct SearchConfig {
  int k = 0, v_low = 0, v_med = 0, v_high = 0;  // uniform: only v_high counts (low = med = high)
  std::string policy;
  std::string spec(const SearchSpace& s) const;
  bool operator==(const SearchConfig& o) const = default;
};

struct SearchOptions {
  SearchMethod method = SearchMethod::random;
  int trials = 8;            // evaluations (distinct settings)
  uint64_t seed = 1;
  double budget_ratio = 4.0; // compressed bytes per token <= full / budget_ratio
  int population = 4;        // evolve: the first `population` trials are random, then parents are picked among
                             // the best `population` so far (binary tournament) and mutated
};

struct SearchTrial {
  std::string spec;
  SearchConfig config;
  double score = 0.0;              // objective (higher is better)
  double kv_bytes_per_token = 0.0; // kv_spec_bytes_per_token
  double ratio = 0.0;              // full / compressed
  double seconds = 0.0;
  std::string origin;              // "random" or "mutation of #i"
};

struct SearchResult {
  SearchOptions options;
  double full_bytes_per_token = 0.0;
  std::vector<SearchTrial> trials;  // in evaluation order
  int best = -1;                    // index of the best trial (highest score, then fewest bytes, then earliest)
};

// Runs the search; `objective(spec)` evaluates one setting (e.g. the average eval score). on_trial may be empty.
// Throws when no setting of the space fits the budget.
SearchResult search_run(const SearchSpace& space, const Config& c, const SearchOptions& o,
                        const std::function<double(const std::string& spec)>& objective,
                        const std::function<void(const SearchTrial&)>& on_trial = {});
std::string search_result_json(const SearchResult& r);  // one JSON object (no trailing newline)

}  // namespace llm
