// Low-rank KV cache: spec parsing, rank policies, weight folding at load, and the attention sub-layer the
// forward pass calls through its hook (see engine/kv_lowrank.h for the layout and the maths).
#include "engine/kv_lowrank.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>

#include "engine/model.h"
#include "kernels/lowrank_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"
#include "loader/ggml_quants.h"

namespace llm {

const char* kv_rank_policy_name(KVRankPolicy p) {
  switch (p) {
    case KVRankPolicy::seed: return "seed";
    case KVRankPolicy::uniform: return "uniform";
    case KVRankPolicy::importance: return "importance";
  }
  return "?";
}
const char* kv_basis_name(KVBasis b) { return b == KVBasis::weights ? "weights" : "calib"; }

// ---- spec ------------------------------------------------------------------------------------------------------

std::vector<std::string> kv_spec_fields(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t b = 0;
  for (;;) {
    size_t e = s.find(sep, b);
    out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + 1;
  }
  return out;
}

namespace {

const char* kGrammar =
    "expected full, or svd:k=RANK,v=RANK[/RANK/RANK],policy=seed|uniform|importance,basis=weights|calib,"
    "metric=score|energy,alloc=uniform|spectrum,sinks=N,vsinks=N,window=N|A/B,fold=f16|f32|q8 "
    "(RANK: a number such as 32, a fraction of head_dim such as 1/4, or d, d/2, d/4 ...); see docs/kv-compression.md";

bool parse_uint(const std::string& s, int& out) {
  if (s.empty() || s.size() > 6) return false;
  for (char ch : s)
    if (ch < '0' || ch > '9') return false;
  out = std::stoi(s);
  return true;
}

// "32", "1/4" (a fraction of head_dim: exactly two numbers), "d", "d/4", "16/32/64", "d/4/d/2/d".
std::vector<KVRank> parse_rank_list(const std::string& text, const std::string& field, const std::string& spec) {
  auto bad = [&](const std::string& why) {
    fail("--kv '", spec, "': ", field, "=", text, ": ", why, "; ", kGrammar);
  };
  if (text.empty()) bad("no rank given");
  const std::vector<std::string> tok = kv_spec_fields(text, '/');
  std::vector<KVRank> out;
  int a = 0, b = 0;
  if (tok.size() == 2 && parse_uint(tok[0], a) && parse_uint(tok[1], b)) {
    if (b == 0) bad("division by zero");
    out.push_back({a, b});
    return out;
  }
  for (size_t i = 0; i < tok.size(); ++i) {
    int x = 0;
    if (tok[i] == "d") {
      int den = 1;
      if (i + 1 < tok.size() && parse_uint(tok[i + 1], den)) {
        if (den == 0) bad("division by zero");
        ++i;
      }
      out.push_back({1, den});
    } else if (parse_uint(tok[i], x)) {
      out.push_back({x, 0});
    } else {
      bad("'" + tok[i] + "' is not a rank");
    }
  }
  return out;
}

KVRankPolicy parse_policy(const std::string& s, const std::string& spec) {
  if (s == "seed") return KVRankPolicy::seed;
  if (s == "uniform") return KVRankPolicy::uniform;
  if (s == "importance") return KVRankPolicy::importance;
  fail("--kv '", spec, "': unknown policy '", s, "': use seed, uniform or importance");
}

KVBasis parse_basis(const std::string& s, const std::string& spec) {
  if (s == "weights") return KVBasis::weights;
  if (s == "calib") return KVBasis::calib;
  fail("--kv '", spec, "': unknown basis '", s, "': use weights or calib");
}

GGMLType parse_fold(const std::string& s, const std::string& spec) {
  if (s == "f16") return GGMLType::F16;
  if (s == "f32") return GGMLType::F32;
  if (s == "q8") return GGMLType::Q8_0;
  fail("--kv '", spec, "': unknown fold '", s, "': use f16 (the folded weights W_K' and W_fused in fp16, the default), "
       "f32 (twice the memory) or q8 (Q8_0, half of f16's)");
}

KVMetric parse_metric(const std::string& s, const std::string& spec) {
  if (s == "score") return KVMetric::score;
  if (s == "energy") return KVMetric::energy;
  fail("--kv '", spec, "': unknown metric '", s, "': use score (attention-score / output error) or energy (||x - x_hat||)");
}

void finish_spec(KVSpec& s, bool v_given) {
  if (!v_given && s.policy == KVRankPolicy::uniform) s.v = {{1, 2}};
  if (s.policy == KVRankPolicy::uniform && s.v.size() != 1)
    fail("--kv '", s.text, "': policy=uniform takes one value rank (v=R), got ", s.v.size());
  if (s.v.size() != 1 && s.v.size() != 3)
    fail("--kv '", s.text, "': v takes one rank or three (low/medium/high), got ", s.v.size());
}

}  // namespace

int KVRank::resolve(int head_dim) const {
  int r = num;
  if (den > 0) {
    if ((int64_t(num) * head_dim) % den != 0 || num == 0)
      fail("rank ", num, "/", den, " of head_dim ", head_dim, " is not a whole positive number of dimensions");
    r = static_cast<int>(int64_t(num) * head_dim / den);
  }
  if (r < 1) fail("rank 0 is not allowed: a rank must be in [1, head_dim = ", head_dim, "]");
  if (r > head_dim) fail("rank ", r, " exceeds head_dim ", head_dim, ": a rank must be in [1, ", head_dim, "]");
  return r;
}

KVSpec kv_spec_parse(const std::string& spec) {
  KVSpec s;
  s.text = spec;
  if (spec == "full") return s;
  if (spec != "svd" && spec.rfind("svd:", 0) != 0) fail("--kv '", spec, "': unknown cache kind; ", kGrammar);
  s.lowrank = true;
  bool v_given = false;
  if (spec.size() > 4) {
    std::vector<std::string> seen;
    for (const std::string& f : kv_spec_fields(spec.substr(4), ',')) {
      const size_t eq = f.find('=');
      if (eq == std::string::npos || eq == 0) fail("--kv '", spec, "': '", f, "' is not KEY=VALUE; ", kGrammar);
      const std::string key = f.substr(0, eq), val = f.substr(eq + 1);
      if (std::find(seen.begin(), seen.end(), key) != seen.end()) fail("--kv '", spec, "': ", key, " given twice");
      seen.push_back(key);
      if (key == "k") {
        auto r = parse_rank_list(val, key, spec);
        if (r.size() != 1) fail("--kv '", spec, "': k takes one rank (keys have a fixed rank), got ", r.size());
        s.k = r[0];
      } else if (key == "v") {
        s.v = parse_rank_list(val, key, spec);
        v_given = true;
      } else if (key == "policy") {
        s.policy = parse_policy(val, spec);
      } else if (key == "basis") {
        s.basis = parse_basis(val, spec);
        s.basis_given = true;
      } else if (key == "metric") {
        s.metric = parse_metric(val, spec);
        s.metric_given = true;
      } else if (key == "sinks") {
        if (!parse_uint(val, s.sinks) || s.sinks > 65536)
          fail("--kv '", spec, "': sinks=", val, ": expected a number of tokens in [0, 65536]");
      } else if (key == "fold") {
        s.fold = parse_fold(val, spec);
      } else if (key == "alloc") {
        if (val != "uniform" && val != "spectrum")
          fail("--kv '", spec, "': unknown alloc '", val, "': use uniform (every layer and KV head at k) or spectrum "
               "(key ranks per layer and KV head from the profile's eigenvalues, the same total)");
        s.k_alloc_spectrum = val == "spectrum";
      } else if (key == "vsinks") {
        if (!parse_uint(val, s.vsinks) || s.vsinks > 65536)
          fail("--kv '", spec, "': vsinks=", val, ": expected a number of tokens in [0, 65536]");
      } else if (key == "window") {
        const size_t sl = val.find('/');  // A/B: a fraction of the session's context size
        const bool ok = sl == std::string::npos
                            ? parse_uint(val, s.window) && s.window <= 65536
                            : parse_uint(val.substr(0, sl), s.window) && parse_uint(val.substr(sl + 1), s.window_den) &&
                                  s.window >= 1 && s.window <= s.window_den && s.window_den <= 65536;
        if (!ok)
          fail("--kv '", spec, "': window=", val, ": expected a number of recent tokens in [0, 65536] or a "
               "fraction A/B of the context size in (0, 1] (window=1/4)");
      } else {
        fail("--kv '", spec, "': unknown key '", key, "'; ", kGrammar);
      }
    }
  }
  finish_spec(s, v_given);
  return s;
}

bool kv_config_key_known(const std::string& key) {
  for (const char* k : {"kv", "k", "v", "policy", "basis", "metric", "alloc", "sinks", "vsinks", "window", "fold",
                        "quant", "keep", "evict", "imp"})
    if (key == k) return true;
  return false;
}

const char* kv_config_keys_text() {
  return "kv, k, v, policy, basis, metric, alloc, sinks, vsinks, window, fold, quant, keep, evict, imp";
}

KVSpec kv_spec_from_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("--kv-config '", path, "': cannot read the file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    fail("--kv-config '", path, "': not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail("--kv-config '", path, "': expected a JSON object such as {\"kv\": \"svd\", \"k\": 32}");
  KVSpec s;
  s.text = path;
  auto str = [&](const char* key) -> std::string {
    if (!j[key].is_string()) fail("--kv-config '", path, "': \"", key, "\" must be a string");
    return j[key].get<std::string>();
  };
  auto rank_text = [&](const nlohmann::json& x, const char* key) -> std::string {
    if (x.is_number_integer()) return std::to_string(x.get<long long>());
    if (x.is_string()) return x.get<std::string>();
    fail("--kv-config '", path, "': \"", key, "\" must be a number, a string such as \"1/4\", or a list of those");
  };
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kv_config_key_known(it.key()))
      fail("--kv-config '", path, "': unknown key \"", it.key(), "\" (known: ", kv_config_keys_text(), ")");
  // "kv" absent: svd when a low-rank key is there or no prefill key is (so {} and {"k": 32} are svd), full when
  // the file holds prefill keys only ({"quant": "4"} is full+quant, not svd+quant)
  const bool lowrank_keys = j.contains("k") || j.contains("v") || j.contains("policy") || j.contains("basis") ||
                            j.contains("metric") || j.contains("sinks") || j.contains("vsinks") ||
                            j.contains("window") || j.contains("alloc") || j.contains("fold");
  const bool prefill_keys = j.contains("quant") || j.contains("keep") || j.contains("evict") || j.contains("imp");
  const std::string kind = j.contains("kv") ? str("kv") : lowrank_keys || !prefill_keys ? "svd" : "full";
  if (kind == "full" && lowrank_keys)
    fail("--kv-config '", path, "': \"kv\" is \"full\" but the file gives low-rank keys (k, v, policy, basis, "
         "metric, alloc, sinks, vsinks, window, fold): write \"kv\": \"svd\" or drop them");
  if (kind == "full") return s;
  if (kind != "svd") fail("--kv-config '", path, "': \"kv\" must be \"full\" or \"svd\", got \"", kind, "\"");
  s.lowrank = true;
  bool v_given = false;
  if (j.contains("k")) {
    auto r = parse_rank_list(rank_text(j["k"], "k"), "k", path);
    if (r.size() != 1) fail("--kv-config '", path, "': \"k\" takes one rank, got ", r.size());
    s.k = r[0];
  }
  if (j.contains("v")) {
    v_given = true;
    s.v.clear();
    if (j["v"].is_array()) {
      for (const auto& x : j["v"]) {
        auto r = parse_rank_list(rank_text(x, "v"), "v", path);
        if (r.size() != 1) fail("--kv-config '", path, "': each element of \"v\" is one rank");
        s.v.push_back(r[0]);
      }
    } else {
      s.v = parse_rank_list(rank_text(j["v"], "v"), "v", path);
    }
  }
  if (j.contains("policy")) s.policy = parse_policy(str("policy"), path);
  if (j.contains("basis")) {
    s.basis = parse_basis(str("basis"), path);
    s.basis_given = true;
  }
  if (j.contains("metric")) {
    s.metric = parse_metric(str("metric"), path);
    s.metric_given = true;
  }
  if (j.contains("sinks")) {
    if (!j["sinks"].is_number_integer() || j["sinks"].get<long long>() < 0 || j["sinks"].get<long long>() > 65536)
      fail("--kv-config '", path, "': \"sinks\" must be a number of tokens in [0, 65536]");
    s.sinks = static_cast<int>(j["sinks"].get<long long>());
  }
  if (j.contains("alloc")) {
    const std::string a = str("alloc");
    if (a != "uniform" && a != "spectrum")
      fail("--kv-config '", path, "': \"alloc\" must be \"uniform\" or \"spectrum\", got \"", a, "\"");
    s.k_alloc_spectrum = a == "spectrum";
  }
  if (j.contains("fold")) {
    s.fold = parse_fold(str("fold"), path);
  }
  if (j.contains("vsinks")) {
    if (!j["vsinks"].is_number_integer() || j["vsinks"].get<long long>() < 0 || j["vsinks"].get<long long>() > 65536)
      fail("--kv-config '", path, "': \"vsinks\" must be a number of tokens in [0, 65536]");
    s.vsinks = static_cast<int>(j["vsinks"].get<long long>());
  }
  if (j.contains("window")) {
    if (j["window"].is_string() && j["window"].get<std::string>().find('/') != std::string::npos) {
      // "1/4": a fraction of the context size, as in the spec text
      const KVSpec w = kv_spec_parse("svd:window=" + j["window"].get<std::string>());
      s.window = w.window, s.window_den = w.window_den;
    } else {
      if (!j["window"].is_number_integer() || j["window"].get<long long>() < 0 ||
          j["window"].get<long long>() > 65536)
        fail("--kv-config '", path, "': \"window\" must be a number of recent tokens in [0, 65536] or a fraction "
             "of the context size as a string (\"1/4\")");
      s.window = static_cast<int>(j["window"].get<long long>());
    }
  }
  finish_spec(s, v_given);
  return s;
}

KVRanks kv_spec_ranks(const KVSpec& s, int head_dim) {
  KVRanks r;
  try {
    r.k = s.k.resolve(head_dim);
    r.v_low = s.v[0].resolve(head_dim);
    r.v_med = s.v.size() == 3 ? s.v[1].resolve(head_dim) : r.v_low;
    r.v_high = s.v.size() == 3 ? s.v[2].resolve(head_dim) : r.v_low;
  } catch (const Error& e) {
    fail("--kv '", s.text, "': ", e.what());
  }
  if (!(r.v_low <= r.v_med && r.v_med <= r.v_high))
    fail("--kv '", s.text, "': value ranks must be ascending (low/medium/high), got ", r.v_low, "/", r.v_med, "/",
         r.v_high);
  return r;
}

std::string kv_spec_describe(const KVSpec& s, const KVRanks& r) {
  if (!s.lowrank) return "full";
  std::ostringstream o;
  o << "svd:k=" << r.k << ",v=" << r.v_low;
  if (s.policy != KVRankPolicy::uniform) o << "/" << r.v_med << "/" << r.v_high;
  o << ",policy=" << kv_rank_policy_name(s.policy) << ",basis=" << kv_basis_name(s.basis)
    << ",metric=" << kv_metric_name(s.metric);
  if (s.sinks > 0) o << ",sinks=" << s.sinks;
  if (s.k_alloc_spectrum) o << ",alloc=spectrum";
  if (s.vsinks > 0) o << ",vsinks=" << s.vsinks;
  if (s.window > 0) o << ",window=" << s.window;
  if (s.window > 0 && s.window_den > 0) o << "/" << s.window_den;
  if (s.fold != GGMLType::F16) o << ",fold=" << (s.fold == GGMLType::F32 ? "f32" : "q8");
  return o.str();
}

int kv_window_tokens(const KVSpec& s, int n_ctx) {
  if (s.window <= 0) return 0;
  if (s.window_den <= 0) return std::min(s.window, n_ctx);
  return std::clamp(static_cast<int>(int64_t(s.window) * n_ctx / s.window_den), 1, std::max(n_ctx, 1));
}

// ---- policies ----------------------------------------------------------------------------------------------------

void kv_policy_ranks(int32_t* out, KVRankPolicy policy, const KVRanks& r, int pos0, int n, int& decode_step,
                     const std::vector<float>& scores) {
  const bool prefill = n > 1 || pos0 == 0;
  switch (policy) {
    case KVRankPolicy::uniform:
      std::fill_n(out, n, r.v_high);
      break;
    case KVRankPolicy::seed:
      if (prefill) {
        decode_step = 0;
        for (int i = 0; i < n; ++i) {
          const double ratio = static_cast<double>(i) / n;
          out[i] = (ratio < 0.2 || ratio > 0.8) ? r.v_low : (ratio < 0.4 || ratio > 0.6) ? r.v_med : r.v_high;
        }
      } else {
        for (int i = 0; i < n; ++i, ++decode_step)
          out[i] = decode_step < 10 ? r.v_high : decode_step < 30 ? r.v_med : r.v_low;
      }
      break;
    case KVRankPolicy::importance: {
      if (scores.empty()) fail("importance policy needs token importance scores (issue 7)");
      if (scores.size() != static_cast<size_t>(n))
        fail("importance policy: ", scores.size(), " scores given for a forward call of ", n, " tokens");
      std::vector<int> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return scores[a] > scores[b]; });
      const int n_high = (n * 2 + 9) / 10, n_med = (n * 4 + 9) / 10;  // 20% high, 40% medium (rounded up)
      for (int k = 0; k < n; ++k) out[order[k]] = k < n_high ? r.v_high : k < n_high + n_med ? r.v_med : r.v_low;
      break;
    }
  }
}

// ---- model: fold the bases into the weights ---------------------------------------------------------------------

std::vector<int> kv_key_rank_allocation(const KVProfile& p, int r_k) {
  const int nb = p.n_layers * p.n_kv_heads, hd = p.head_dim;
  if (r_k < 1 || r_k > hd) fail("key rank allocation: rank ", r_k, " outside [1, head_dim = ", hd, "]");
  if (p.k_eig.size() != size_t(nb) * hd) fail("key rank allocation: the profile has no key eigenvalues");
  std::vector<int> rank(nb, 1);
  std::vector<std::pair<float, int>> rest;  // (eigenvalue j >= 1, block); each block's are descending
  rest.reserve(size_t(nb) * (hd - 1));
  for (int b = 0; b < nb; ++b)
    for (int j = 1; j < hd; ++j) rest.push_back({p.k_eig[size_t(b) * hd + j], b});
  // largest first; ties by block, then (stable) by j, so the picks of a block stay a prefix
  std::stable_sort(rest.begin(), rest.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
  const size_t extra = size_t(nb) * (r_k - 1);
  for (size_t i = 0; i < extra; ++i) ++rank[rest[i].second];
  return rank;
}

namespace {
// Keep a folded fp32 matrix (rows x cols, row-major) in `out` as GGML rows of the spec's fold type (F32, F16 or
// Q8_0) and return its view. fp16 keeps 11 significant bits: a relative error of at most 2^-11 per weight, far
// below the quantisation of the weights it was folded from (Q4/Q8 GGUF); values below 2^-14 become subnormal (and
// below 2^-25 zero), which the folded weights' scale (about that of W_O and W_K) makes negligible. Q8_0: per block
// of 32, d = max |w| / 127 (stored fp16), q = round(w / d) in [-127, 127]: an error of at most d/2 (plus d's own
// rounding) per weight. `what` names the matrix for the error when cols is not a multiple of 32.
QMatrix fold_store(const std::vector<float>& f, int64_t rows, int64_t cols, GGMLType type, std::vector<uint8_t>& out,
                   ThreadPool* pool, const KVSpec& spec, const char* what) {
  const size_t n = size_t(rows) * cols;
  if (type == GGMLType::F32) {
    out.resize(n * sizeof(float));
    std::memcpy(out.data(), f.data(), out.size());
    return QMatrix{GGMLType::F32, out.data(), rows, cols, size_t(cols) * sizeof(float)};
  }
  if (type == GGMLType::F16) {
    out.resize(n * 2);
    parallel_for(pool, rows, [&](int64_t rb, int64_t re) {
      for (size_t i = size_t(rb) * cols; i < size_t(re) * cols; ++i) {
        const uint16_t h = f32_to_fp16(f[i]);
        std::memcpy(out.data() + 2 * i, &h, 2);
      }
    });
    return QMatrix{GGMLType::F16, out.data(), rows, cols, size_t(cols) * 2};
  }
  if (cols % 32 != 0)
    fail("--kv '", spec.text, "': fold=q8 stores ", what, " in blocks of 32 along its ", cols, " columns, which is "
         "not a multiple of 32; use fold=f16");
  const size_t row_bytes = size_t(cols / 32) * 34;
  out.resize(size_t(rows) * row_bytes);
  parallel_for(pool, rows, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r)
      for (int64_t b = 0; b < cols / 32; ++b) {
        const float* x = f.data() + size_t(r) * cols + b * 32;
        uint8_t* blk = out.data() + size_t(r) * row_bytes + b * 34;
        float amax = 0.0f;
        for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
        const uint16_t dh = f32_to_fp16(amax / 127.0f);
        std::memcpy(blk, &dh, 2);
        const float d = fp16_to_f32(dh), inv = d > 0.0f ? 1.0f / d : 0.0f;
        for (int i = 0; i < 32; ++i) {
          const float q = std::nearbyint(x[i] * inv);
          blk[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f)));
        }
      }
  });
  return QMatrix{GGMLType::Q8_0, out.data(), rows, cols, row_bytes};
}
}  // namespace

std::unique_ptr<KVLowRankModel> kv_lowrank_model_create(const KVSpec& spec, const std::string& profile_path,
                                                        const Config& c, const Weights& w, ThreadPool* pool,
                                                        Device device) {
  if (!spec.lowrank) fail("kv_lowrank_model_create: the spec is 'full'");
  auto m = std::make_unique<KVLowRankModel>();
  m->spec = spec;
  m->ranks = kv_spec_ranks(spec, c.head_dim);
  if (profile_path.empty()) {
    if (spec.basis == KVBasis::calib)
      fail("--kv '", spec.text, "': basis=calib needs a calibration profile: make one with `llm compress --basis "
           "calib -o PROFILE.safetensors` and pass it with --kv-profile PROFILE.safetensors");
    m->profile = kv_profile_from_weights(c, w, pool, {}, spec.metric, device);
  } else {
    m->profile = kv_profile_load(profile_path);
    kv_profile_check(m->profile, c, w, profile_path);
    if (spec.basis_given && m->profile.basis != kv_basis_name(spec.basis))
      fail("--kv asks for basis=", kv_basis_name(spec.basis), " but the profile '", profile_path, "' has basis ",
           m->profile.basis, ": drop basis= from --kv or pass a ", kv_basis_name(spec.basis), " profile");
    m->spec.basis = m->profile.basis == "calib" ? KVBasis::calib : KVBasis::weights;
    if (spec.metric_given && m->profile.metric != spec.metric)
      fail("--kv asks for metric=", kv_metric_name(spec.metric), " but the profile '", profile_path, "' has metric ",
           kv_metric_name(m->profile.metric), ": drop metric= from --kv or make a profile with `llm compress --metric ",
           kv_metric_name(spec.metric), "`");
    m->spec.metric = m->profile.metric;
  }
  // window > 0 or vsinks > 0: the window's / sinks' tokens are read at full value rank (all head_dim coefficients),
  // so W_fused spans every UP row; the cache still stores each token at its policy rank
  m->r_fused = spec.window > 0 || spec.vsinks > 0 ? c.head_dim : m->ranks.v_max();
  m->k_rank.assign(size_t(c.n_layers) * c.n_kv_heads, m->ranks.k);
  if (spec.k_alloc_spectrum) m->k_rank = kv_key_rank_allocation(m->profile, m->ranks.k);
  m->r_kpad = *std::max_element(m->k_rank.begin(), m->k_rank.end());
  const int hd = c.head_dim, rk = m->r_kpad, rv = m->r_fused, dim = c.dim;
  const int nkv = c.n_kv_heads, gs = c.n_heads / c.n_kv_heads, qd = c.n_heads * hd;
  m->layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    KVLowRankModel::Layer& Lr = m->layers[l];
    const LayerWeights& L = w.layers[l];
    Lr.uk.resize(size_t(nkv) * rk * hd);
    Lr.uk_down.resize(size_t(nkv) * rk * hd);
    Lr.uv.resize(size_t(nkv) * rv * hd);
    Lr.uv_up.resize(size_t(nkv) * rv * hd);
    for (int g = 0; g < nkv; ++g) {
      const int kr = m->k_rank[size_t(l) * nkv + g];  // rows kr .. rk-1 stay zero (padding)
      std::memcpy(Lr.uk.data() + size_t(g) * rk * hd, m->profile.k_up_rows(l, g), size_t(kr) * hd * sizeof(float));
      std::memcpy(Lr.uk_down.data() + size_t(g) * rk * hd, m->profile.k_rows(l, g), size_t(kr) * hd * sizeof(float));
      std::memcpy(Lr.uv.data() + size_t(g) * rv * hd, m->profile.v_rows(l, g), size_t(rv) * hd * sizeof(float));
      std::memcpy(Lr.uv_up.data() + size_t(g) * rv * hd, m->profile.v_up_rows(l, g), size_t(rv) * hd * sizeof(float));
    }
    // W_K' = DOWN_K[:r_k] W_K,g per KV head (accumulated in double: it replaces W_K exactly at full rank)
    std::vector<float> wk(size_t(nkv) * rk * dim, 0.0f);
    parallel_for(pool, nkv, [&](int64_t gb, int64_t ge) {
      std::vector<float> wrows(size_t(hd) * dim);
      std::vector<double> acc(dim);
      for (int64_t g = gb; g < ge; ++g) {
        for (int i = 0; i < hd; ++i)
          dequantize_row(L.wk.type, L.wk.data + (g * hd + i) * L.wk.row_bytes, wrows.data() + size_t(i) * dim, dim);
        const float* u = Lr.uk_down.data() + size_t(g) * rk * hd;
        const int kr = m->k_rank[size_t(l) * nkv + g];  // rows kr .. rk-1 stay zero
        for (int j = 0; j < kr; ++j) {
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int i = 0; i < hd; ++i) {
            const double uji = u[size_t(j) * hd + i];
            const float* wr = wrows.data() + size_t(i) * dim;
            for (int d = 0; d < dim; ++d) acc[d] += uji * wr[d];
          }
          float* dst = wk.data() + (size_t(g) * rk + j) * dim;
          for (int d = 0; d < dim; ++d) dst[d] = static_cast<float>(acc[d]);
        }
      }
    });
    // the packed W_K' (the CPU cache's c_k rows, no zero rows): a copy only where some head's rank is below r_kpad
    int64_t pack_rows = 0;
    for (int g = 0; g < nkv; ++g) pack_rows += m->k_rank[size_t(l) * nkv + g];
    if (pack_rows < int64_t(nkv) * rk) {
      std::vector<float> pack(size_t(pack_rows) * dim);
      float* dst = pack.data();
      for (int g = 0; g < nkv; ++g) {
        const int kr = m->k_rank[size_t(l) * nkv + g];
        std::memcpy(dst, wk.data() + size_t(g) * rk * dim, size_t(kr) * dim * sizeof(float));
        dst += size_t(kr) * dim;
      }
      Lr.wk_pack = fold_store(pack, pack_rows, dim, spec.fold, Lr.wk_pack_data, pool, spec, "W_K'");
    }
    Lr.wk = fold_store(wk, int64_t(nkv) * rk, dim, spec.fold, Lr.wk_data, pool, spec, "W_K'");
    if (Lr.wk_pack_data.empty()) Lr.wk_pack = Lr.wk;
    // W_fused[o, h*r_v + j] = sum_i W_O[o, h*hd + i] UP_V,g(h)[j, i]; UP_V laid out (hd, r_v) so the
    // inner loop runs over j contiguously (vectorises; fp32 sums of head_dim terms are exact enough)
    std::vector<float> uvt(size_t(nkv) * hd * rv);
    for (int g = 0; g < nkv; ++g)
      for (int j = 0; j < rv; ++j)
        for (int i = 0; i < hd; ++i) uvt[(size_t(g) * hd + i) * rv + j] = Lr.uv_up[(size_t(g) * rv + j) * hd + i];
    std::vector<float> wo(size_t(dim) * c.n_heads * rv, 0.0f);
    parallel_for(pool, dim, [&](int64_t ob, int64_t oe) {
      std::vector<float> row(qd);
      for (int64_t o = ob; o < oe; ++o) {
        dequantize_row(L.wo.type, L.wo.data + o * L.wo.row_bytes, row.data(), qd);
        float* dst = wo.data() + size_t(o) * c.n_heads * rv;
        for (int h = 0; h < c.n_heads; ++h) {
          const float* ut = uvt.data() + size_t(h / gs) * hd * rv;
          const float* wr = row.data() + size_t(h) * hd;
          float* out = dst + size_t(h) * rv;
          for (int i = 0; i < hd; ++i) {
            const float wi = wr[i];
            const float* u = ut + size_t(i) * rv;
            for (int j = 0; j < rv; ++j) out[j] += wi * u[j];
          }
        }
      }
    });
    Lr.wo = fold_store(wo, dim, int64_t(c.n_heads) * rv, spec.fold, Lr.wo_data, pool, spec,
                       "W_fused (n_heads x r_fused columns)");
  }
  return m;
}

void kv_lowrank_release_folded(KVLowRankModel& m) {
  for (KVLowRankModel::Layer& L : m.layers) {
    for (std::vector<uint8_t>* v : {&L.wk_data, &L.wk_pack_data, &L.wo_data}) std::vector<uint8_t>().swap(*v);
    L.wk.data = L.wk_pack.data = L.wo.data = nullptr;
  }
}

// ---- session: the cache ------------------------------------------------------------------------------------------

KVLowRank kv_lowrank_create(const KVLowRankModel& m, const Config& c, int capacity) {
  if (capacity <= 0) fail("context size must be positive, got ", capacity);
  KVLowRank lr;
  lr.model = &m;
  lr.n_layers = c.n_layers;
  lr.n_kv_heads = c.n_kv_heads;
  lr.head_dim = c.head_dim;
  lr.capacity = capacity;
  if (m.k_rank.size() != size_t(c.n_layers) * c.n_kv_heads)
    fail("kv_lowrank_create: the low-rank model has ", m.k_rank.size(), " key ranks, the config ",
         c.n_layers * c.n_kv_heads, " (layer, KV head) blocks: create the model with kv_lowrank_model_create for it");
  // c_k packed: each block at its own key rank (alloc=spectrum), one after another
  lr.ck_off.resize(m.k_rank.size());
  int64_t off = 0;
  for (size_t b = 0; b < m.k_rank.size(); ++b) {
    lr.ck_off[b] = off;
    off += int64_t(capacity) * m.k_rank[b];
  }
  lr.ck.assign(size_t(off), 0.0f);
  lr.vrank.assign(capacity, 0);
  lr.voff.assign(size_t(capacity) + 1, 0);
  lr.n_sink = std::min(m.spec.sinks, capacity);
  lr.ksink.assign(size_t(c.n_layers) * c.n_kv_heads * lr.n_sink * c.head_dim, 0.0f);
  lr.window = kv_window_tokens(m.spec, capacity);
  lr.kwin.assign(size_t(c.n_layers) * c.n_kv_heads * lr.window * c.head_dim, 0.0f);
  lr.vwin.assign(lr.kwin.size(), 0.0f);
  return lr;
}

size_t KVLowRank::bytes_used(int n_tokens) const {
  if (!model) return 0;
  // window: the last w tokens are held in full in the ring, the older ones compressed (each token once)
  const int w = std::min(n_tokens, window);
  // keys: each block's own rank (alloc=spectrum: c_k is stored packed, without padding to r_kpad)
  size_t key_ranks = 0;
  for (int r : model->k_rank) key_ranks += size_t(r);
  const size_t per_block = size_t(voff[n_tokens - w]) + size_t(std::min(n_tokens, n_sink)) * head_dim +
                           size_t(w) * 2 * head_dim;
  return (per_block * n_layers * n_kv_heads + size_t(n_tokens - w) * key_ranks) * sizeof(float);
}

void kv_lowrank_begin(KVLowRank& lr, int pos0, int n) {
  if (!lr.model) return;  // calibration capture: the ordinary cache
  if (pos0 + n > lr.capacity) fail("low-rank cache: ", pos0 + n, " tokens exceed the capacity ", lr.capacity);
  std::vector<float> scores;
  scores.swap(lr.next_scores);
  kv_policy_ranks(lr.vrank.data() + pos0, lr.model->spec.policy, lr.model->ranks, pos0, n, lr.decode_step, scores);
  for (int t = pos0; t < std::min(pos0 + n, lr.model->spec.vsinks); ++t) lr.vrank[t] = lr.head_dim;  // value sinks
  for (int t = pos0; t < pos0 + n; ++t) lr.voff[t + 1] = lr.voff[t] + lr.vrank[t];
  const int64_t need = lr.voff[pos0 + n];
  if (need > lr.v_cap) {
    // grow geometrically up to the worst case, re-laying every (layer, KV head) block
    const int64_t worst = int64_t(lr.capacity) * lr.model->r_fused;
    const int64_t cap = std::max(need, std::min(worst, std::max<int64_t>(2 * lr.v_cap, 64 * lr.model->r_fused)));
    std::vector<float> cv(size_t(lr.n_layers) * lr.n_kv_heads * cap, 0.0f);
    const int64_t keep = lr.voff[pos0];
    for (int64_t b = 0; b < int64_t(lr.n_layers) * lr.n_kv_heads && keep > 0; ++b)
      std::memcpy(cv.data() + b * cap, lr.cv.data() + b * lr.v_cap, size_t(keep) * sizeof(float));
    lr.cv.swap(cv);
    lr.v_cap = cap;
  }
}

void kv_lowrank_attention(const Config& c, const LayerWeights& L, int l, KVLowRank& lr, KVCache& kv, RunState& s,
                          int n, int pos0, ThreadPool* pool) {
  const int hd = c.head_dim, qd = c.n_heads * hd, kvd = c.n_kv_heads * hd, nkv = c.n_kv_heads;
  matmul_cpu(s.q.data(), s.xb.data(), L.wq, n, pool);
  if (lr.calib && !lr.calib->qq.empty()) {
    // the queries' second moment before RoPE, summed over each KV head's group (the score metric's C_q)
    KVCalibration& cal = *lr.calib;
    const int gs = c.n_heads / nkv;
    parallel_for(pool, nkv, [&](int64_t b, int64_t e) {
      for (int64_t g = b; g < e; ++g) {
        double* acc = cal.qq.data() + (size_t(l) * nkv + g) * hd * hd;
        for (int i = 0; i < n; ++i)
          for (int hh = 0; hh < gs; ++hh) {
            const float* x = s.q.data() + size_t(i) * qd + (size_t(g) * gs + hh) * hd;
            for (int a = 0; a < hd; ++a) {
              const double xa = x[a];
              for (int b2 = 0; b2 < hd; ++b2) acc[size_t(a) * hd + b2] += xa * x[b2];
            }
          }
      }
    });
  }
  rope_cpu(s.q.data(), s.pos.data(), n, c.n_heads, hd, qd, s.inv_freq.data(), c.rope_layout, pool);
  if (lr.calib) {
    // calibration capture: the ordinary full-cache attention, plus sums of k k^T (before RoPE) and v v^T
    KVCalibration& cal = *lr.calib;
    {
      float* outs[2] = {s.k.data(), s.v.data()};
      const QMatrix* ws[2] = {&L.wk, &L.wv};
      matmul_group_cpu(outs, ws, 2, s.xb.data(), n, pool);
    }
    parallel_for(pool, int64_t(nkv) * 2, [&](int64_t b, int64_t e) {
      for (int64_t task = b; task < e; ++task) {
        const int g = static_cast<int>(task / 2);
        const float* src = task % 2 == 0 ? s.k.data() : s.v.data();
        double* acc = (task % 2 == 0 ? cal.kk.data() : cal.vv.data()) + (size_t(l) * nkv + g) * hd * hd;
        for (int i = 0; i < n; ++i) {
          const float* x = src + size_t(i) * kvd + size_t(g) * hd;
          for (int a = 0; a < hd; ++a) {
            const double xa = x[a];
            for (int b2 = 0; b2 < hd; ++b2) acc[size_t(a) * hd + b2] += xa * x[b2];
          }
        }
      }
    });
    if (l == 0) cal.count += n;
    rope_cpu(s.k.data(), s.pos.data(), n, nkv, hd, kvd, s.inv_freq.data(), c.rope_layout, pool);
    float* kc = kv.k_layer(l);
    float* vc = kv.v_layer(l);
    for (int i = 0; i < n; ++i)
      for (int g = 0; g < nkv; ++g) {
        const size_t dst = (static_cast<size_t>(g) * kv.capacity + pos0 + i) * hd;
        std::memcpy(kc + dst, s.k.data() + size_t(i) * kvd + g * hd, hd * sizeof(float));
        std::memcpy(vc + dst, s.v.data() + size_t(i) * kvd + g * hd, hd * sizeof(float));
      }
    attention_cpu(s.att.data(), s.q.data(), kc, vc, n, pos0 + n, c.n_heads, nkv, hd, kv.capacity, pool);
    matmul_cpu(s.xb.data(), s.att.data(), L.wo, n, pool);
    return;
  }
  const KVLowRankModel& M = *lr.model;
  const KVLowRankModel::Layer& Lr = M.layers[l];
  const int rk = M.r_kpad, rv = M.r_fused, W = lr.window;
  // keys: c_k = W_K' x directly (n, kp: KV head g's k_rank[g] values at kcol[g], packed); values: v = W_V x, then
  // c_v = U_V[:, :r_t]^T v at each token's rank. With a window the c_k rows come from the full keys when their tokens
  // leave the ring (below): no W_K' x then.
  const int* krank = M.k_rank.data() + size_t(l) * nkv;  // this layer's key rank per KV head
  const int64_t* ckoff = lr.ck_off.data() + size_t(l) * nkv;
  const int kp = static_cast<int>(Lr.wk_pack.rows);
  std::vector<int> kcol(nkv, 0);
  for (int g = 1; g < nkv; ++g) kcol[g] = kcol[g - 1] + krank[g - 1];
  if (W == 0) {
    float* outs[2] = {s.k.data(), s.v.data()};
    const QMatrix* ws[2] = {&Lr.wk_pack, &L.wv};
    matmul_group_cpu(outs, ws, 2, s.xb.data(), n, pool);
  } else {
    matmul_cpu(s.v.data(), s.xb.data(), L.wv, n, pool);
  }
  float* ck = lr.ck.data();  // KV head g's block at ck + ckoff[g], krank[g] floats per token
  float* cv = lr.cv.data() + size_t(l) * nkv * lr.v_cap;
  float* ksink = lr.ksink.data() + size_t(l) * nkv * lr.n_sink * hd;
  if (pos0 < lr.n_sink) {
    // attention sinks: the full pre-RoPE keys W_K x of the first tokens (few rows: a small extra matmul)
    const int m = std::min(n, lr.n_sink - pos0);
    std::vector<float> kfull(size_t(m) * kvd);
    matmul_cpu(kfull.data(), s.xb.data(), L.wk, m, pool);
    for (int i = 0; i < m; ++i)
      for (int g = 0; g < nkv; ++g)
        std::memcpy(ksink + (size_t(g) * lr.n_sink + pos0 + i) * hd, kfull.data() + size_t(i) * kvd + size_t(g) * hd,
                    hd * sizeof(float));
  }
  // window > 0: a token's compressed forms are written when it leaves the ring (below), not here
  if (W == 0) parallel_for(pool, int64_t(nkv) * n, [&](int64_t b, int64_t e) {
    for (int64_t task = b; task < e; ++task) {
      const int g = static_cast<int>(task / n), i = static_cast<int>(task % n), t = pos0 + i;
      std::memcpy(ck + ckoff[g] + size_t(t) * krank[g], s.k.data() + size_t(i) * kp + kcol[g],
                  size_t(krank[g]) * sizeof(float));
      const float* v = s.v.data() + size_t(i) * kvd + size_t(g) * hd;
      float* dst = cv + size_t(g) * lr.v_cap + lr.voff[t];
      lowrank_project_cpu(dst, Lr.uv.data() + size_t(g) * rv * hd, v, lr.vrank[t], hd);
    }
  });
  // window: full keys and full-rank value coefficients of tokens [lo, pos0 + n), the older ones from the ring (which
  // holds [lo, pos0)), this call's computed here (W_K x: one extra matmul of the full key width). Tokens leaving the
  // ring in this call, [lo, pos0 + n - W), get their compressed forms now, from the full ones (c_k = DOWN_K[:r_k] k,
  // c_v = the first vrank coefficients), before the attention reads them: the cache holds each token once.
  const int lo = std::max(0, pos0 - W), nw = W > 0 ? pos0 + n - lo : 0;
  std::vector<float> kw, vw;
  if (W > 0) {
    kw.resize(size_t(nkv) * nw * hd);
    vw.resize(size_t(nkv) * nw * hd);
    std::vector<float> kfull(size_t(n) * kvd);
    matmul_cpu(kfull.data(), s.xb.data(), L.wk, n, pool);
    float* kring = lr.kwin.data() + size_t(l) * nkv * W * hd;
    float* vring = lr.vwin.data() + size_t(l) * nkv * W * hd;
    parallel_for(pool, nkv, [&](int64_t gb, int64_t ge) {
      for (int64_t g = gb; g < ge; ++g) {
        for (int t = lo; t < pos0; ++t) {
          const size_t row = (size_t(g) * nw + t - lo) * hd, slot = (size_t(g) * W + t % W) * hd;
          std::memcpy(kw.data() + row, kring + slot, hd * sizeof(float));
          std::memcpy(vw.data() + row, vring + slot, hd * sizeof(float));
        }
        const float* u = Lr.uv.data() + size_t(g) * rv * hd;  // all head_dim DOWN rows (rv == hd)
        for (int i = 0; i < n; ++i) {
          const int t = pos0 + i;
          float* kd = kw.data() + (size_t(g) * nw + t - lo) * hd;
          float* vd = vw.data() + (size_t(g) * nw + t - lo) * hd;
          std::memcpy(kd, kfull.data() + size_t(i) * kvd + size_t(g) * hd, hd * sizeof(float));
          lowrank_project_cpu(vd, u, s.v.data() + size_t(i) * kvd + size_t(g) * hd, hd, hd);
        }
        const float* kd = Lr.uk_down.data() + size_t(g) * rk * hd;
        for (int t = lo; t < pos0 + n - W; ++t) {
          const float* k = kw.data() + (size_t(g) * nw + t - lo) * hd;
          lowrank_project_cpu(ck + ckoff[g] + size_t(t) * krank[g], kd, k, krank[g], hd);
          std::memcpy(cv + size_t(g) * lr.v_cap + lr.voff[t], vw.data() + (size_t(g) * nw + t - lo) * hd,
                      size_t(lr.vrank[t]) * sizeof(float));
        }
        // the ring keeps the last W tokens for the next calls
        for (int t = std::max(lo, pos0 + n - W); t < pos0 + n; ++t) {
          const size_t row = (size_t(g) * nw + t - lo) * hd, slot = (size_t(g) * W + t % W) * hd;
          std::memcpy(kring + slot, kw.data() + row, hd * sizeof(float));
          std::memcpy(vring + slot, vw.data() + row, hd * sizeof(float));
        }
      }
    });
  }
  LowRankAttentionArgs a;
  a.q = s.q.data();
  a.ck = ck;
  a.ck_off = ckoff;
  a.k_ranks = krank;
  a.uk = Lr.uk.data();
  a.cv = cv;
  a.voff = lr.voff.data();
  a.vrank = lr.vrank.data();
  a.ck_stride = lr.capacity;
  a.cv_stride = lr.v_cap;
  a.r_k = rk;
  a.r_vmax = rv;
  a.n_q = n;
  a.n_kv = pos0 + n;
  a.n_heads = c.n_heads;
  a.n_kv_heads = nkv;
  a.head_dim = hd;
  a.inv_freq = s.inv_freq.data();
  a.rope_layout = c.rope_layout;
  a.rope_cs = runstate_rope_table(s, pos0 + n, hd);  // key t at position t
  a.k_sink = ksink;
  a.k_sink_stride = lr.n_sink;
  a.n_sink = lr.n_sink;
  a.k_win = kw.data();
  a.v_win = vw.data();
  a.win_stride = nw;
  a.win_lo = lo;
  a.window = W;
  attention_lowrank_cpu(s.att.data(), a, pool);  // z: (n, n_heads, r_vmax) in s.att
  matmul_cpu(s.xb.data(), s.att.data(), Lr.wo, n, pool);
}

KVBytes kv_bytes_per_token(const Config& c, int r_k, double mean_r_v, int bytes_per_elem) {
  KVBytes b;
  b.full = 2.0 * c.n_layers * c.n_kv_heads * c.head_dim * bytes_per_elem;
  b.compressed = double(c.n_layers) * c.n_kv_heads * (r_k + mean_r_v) * bytes_per_elem;
  return b;
}

}  // namespace llm
