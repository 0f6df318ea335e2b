// The prefill-compression parts of the unified --kv spec and --kv-config (grammar in engine/kv_prefill.h and
// docs/prefill-compression.md), and the per-layer schedules they resolve to.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "engine/kv_lowrank.h"
#include "engine/kv_prefill.h"
#include "loader/error.h"

namespace llm {

const char* kv_evict_name(KVEvict e) {
  switch (e) {
    case KVEvict::none: return "none";
    case KVEvict::streaming: return "streaming";
    case KVEvict::h2o: return "h2o";
    case KVEvict::snapkv: return "snapkv";
    case KVEvict::pyramidkv: return "pyramidkv";
    case KVEvict::importance: return "importance";
  }
  return "?";
}

namespace {

const char* kPrefillGrammar =
    "a KV spec is full or svd:... (docs/kv-compression.md) optionally followed by parts joined by '+': quant:BITS[=FRACS][,recent=N][,group=N|head][,wbits=B][,hadamard] "
    "(BITS from 8/4/2/16, e.g. 8/4/2=0.2/0.5/0.3), keep:RATIO|R1/R2/...[,constant|linear|pyramid][,from=LAYER], "
    "evict:streaming|h2o|snapkv|pyramidkv|importance[,budget=RATIO], imp:a=X,b=X,c=X,w=N,pool=N,sinks=N,recent=N; "
    "see docs/prefill-compression.md";

struct PartParser {
  std::string spec;  // the whole text, for messages
  [[noreturn]] void bad(const std::string& part, const std::string& why) const {
    fail("--kv '", spec, "': ", part, ": ", why, "; ", kPrefillGrammar);
  }
  float number(const std::string& part, const std::string& t) const {
    if (t.empty()) bad(part, "a number is missing");
    char* end = nullptr;
    const double x = std::strtod(t.c_str(), &end);
    if (*end != '\0' || !std::isfinite(x)) bad(part, "'" + t + "' is not a number");
    return static_cast<float>(x);
  }
  int integer(const std::string& part, const std::string& t, int lo) const {
    if (t.empty() || t.size() > 7 || t.find_first_not_of("0123456789") != std::string::npos)
      bad(part, "'" + t + "' is not a whole number");
    const int x = std::stoi(t);
    if (x < lo) bad(part, "'" + t + "' must be >= " + std::to_string(lo));
    return x;
  }
  float ratio(const std::string& part, const std::string& t) const {
    const float r = number(part, t);
    if (!(r > 0.0f && r <= 1.0f)) bad(part, "ratio " + t + " is outside (0, 1]");
    return r;
  }

  void quant(KVQuantSpec& q, const std::string& body) const {
    const std::string part = "quant:" + body;
    q.on = true;
    const auto fields = kv_spec_fields(body, ',');
    const std::string& head = fields[0];
    const size_t eq = head.find('=');
    q.bits.clear();
    q.frac.clear();
    for (const auto& b : kv_spec_fields(head.substr(0, eq), '/')) {
      const int bits = integer(part, b, 1);
      if (bits != 2 && bits != 4 && bits != 8 && bits != 16) bad(part, "width " + b + " unsupported: use 2, 4, 8 or 16");
      q.bits.push_back(bits);
    }
    if (eq == std::string::npos) {
      if (q.bits.size() != 1) bad(part, "several widths need their fractions: BITS=FRACS, e.g. 8/4/2=0.2/0.5/0.3");
      q.frac = {1.0f};
    } else {
      for (const auto& f : kv_spec_fields(head.substr(eq + 1), '/')) {
        const float x = number(part, f);
        if (x < 0.0f || x > 1.0f) bad(part, "fraction " + f + " is outside [0, 1]");
        q.frac.push_back(x);
      }
      if (q.frac.size() != q.bits.size())
        bad(part, std::to_string(q.bits.size()) + " widths but " + std::to_string(q.frac.size()) + " fractions");
    }
    float sum = 0;
    for (float f : q.frac) sum += f;
    if (std::fabs(sum - 1.0f) > 1e-3f) {
      std::ostringstream o;
      o << "the fractions sum to " << sum << ", they must sum to 1";
      bad(part, o.str());
    }
    for (size_t i = 1; i < fields.size(); ++i) {
      const size_t e = fields[i].find('=');
      const std::string key = fields[i].substr(0, e), val = e == std::string::npos ? "" : fields[i].substr(e + 1);
      if (key == "recent") q.recent = integer(part, val, 0);
      else if (key == "group") q.group = val == "head" ? 0 : integer(part, val, 4);
      else if (key == "hadamard") {
        if (e != std::string::npos) bad(part, "hadamard takes no value");
        q.hadamard = true;
      } else if (key == "wbits") {
        q.wbits = integer(part, val, 1);
        if (q.wbits != 2 && q.wbits != 4 && q.wbits != 8 && q.wbits != 16)
          bad(part, "wbits=" + val + " unsupported: use 2, 4, 8 or 16");
      } else bad(part, "unknown key '" + key + "' (recent, group, wbits, hadamard)");
    }
  }

  void keep(KVKeepSpec& k, const std::string& body) const {
    const std::string part = "keep:" + body;
    k.on = true;
    const auto fields = kv_spec_fields(body, ',');
    const auto list = kv_spec_fields(fields[0], '/');
    if (list.size() == 1) {
      k.ratio = ratio(part, list[0]);
    } else {
      for (const auto& r : list) k.list.push_back(ratio(part, r));
      k.schedule = KVKeepSchedule::list;
      k.ratio = k.list.back();
    }
    for (size_t i = 1; i < fields.size(); ++i) {
      const std::string& f = fields[i];
      if (f == "constant" || f == "linear" || f == "pyramid") {
        if (k.schedule == KVKeepSchedule::list) bad(part, "a list of ratios takes no schedule name");
        k.schedule = f == "constant" ? KVKeepSchedule::constant
                     : f == "linear" ? KVKeepSchedule::linear
                                     : KVKeepSchedule::pyramid;
      } else if (f.rfind("from=", 0) == 0) {
        k.from = integer(part, f.substr(5), 1);
      } else {
        bad(part, "unknown field '" + f + "' (constant, linear, pyramid, from=LAYER)");
      }
    }
  }

  void evict(KVEvictSpec& e, const std::string& body) const {
    const std::string part = "evict:" + body;
    const auto fields = kv_spec_fields(body, ',');
    const std::string& m = fields[0];
    e.method = m == "streaming"    ? KVEvict::streaming
               : m == "h2o"        ? KVEvict::h2o
               : m == "snapkv"     ? KVEvict::snapkv
               : m == "pyramidkv"  ? KVEvict::pyramidkv
               : m == "importance" ? KVEvict::importance
                                   : KVEvict::none;
    if (e.method == KVEvict::none)
      bad(part, "unknown method '" + m + "' (streaming, h2o, snapkv, pyramidkv, importance)");
    for (size_t i = 1; i < fields.size(); ++i) {
      if (fields[i].rfind("budget=", 0) == 0) e.budget = ratio(part, fields[i].substr(7));
      else bad(part, "unknown field '" + fields[i] + "' (budget=RATIO)");
    }
  }

  void imp(KVImportanceParams& p, const std::string& body) const {
    const std::string part = "imp:" + body;
    for (const auto& f : kv_spec_fields(body, ',')) {
      const size_t e = f.find('=');
      if (e == std::string::npos) bad(part, "'" + f + "' is not KEY=VALUE");
      const std::string key = f.substr(0, e), val = f.substr(e + 1);
      if (key == "a") p.a = number(part, val);
      else if (key == "b") p.b = number(part, val);
      else if (key == "c") p.c = number(part, val);
      else if (key == "w") p.w = integer(part, val, 1);
      else if (key == "pool") p.pool = integer(part, val, 1);
      else if (key == "sinks") p.sinks = integer(part, val, 0);
      else if (key == "recent") p.recent = integer(part, val, 0);
      else bad(part, "unknown key '" + key + "' (a, b, c, w, pool, sinks, recent)");
    }
    if (p.a < 0 || p.b < 0 || p.c < 0 || p.a + p.b + p.c <= 0)
      bad(part, "a, b, c must be >= 0 and not all 0");
    if (p.pool % 2 == 0) bad(part, "pool must be odd (a centred window)");
  }

  void apply(KVPrefillSpec& s, const std::string& p, std::vector<std::string>& seen) const {
    const size_t colon = p.find(':');
    const std::string name = p.substr(0, colon);
    if (colon == std::string::npos || colon + 1 == p.size()) bad(p, "expected NAME:FIELDS");
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) bad(p, "'" + name + "' given twice");
    seen.push_back(name);
    const std::string body = p.substr(colon + 1);
    if (name == "quant") quant(s.quant, body);
    else if (name == "keep") keep(s.keep, body);
    else if (name == "evict") evict(s.evict, body);
    else if (name == "imp") imp(s.imp, body);
    else bad(p, "unknown part '" + name + "'");
  }
};

}  // namespace

KVPrefillSpec kv_prefill_spec_parse(const std::string& spec, std::string& base) {
  KVPrefillSpec s;
  PartParser pp{spec};
  auto parts = kv_spec_fields(spec, '+');
  base = "full";
  size_t first = 0;
  if (parts[0] == "full" || parts[0] == "svd" || parts[0].rfind("svd:", 0) == 0) {
    base = parts[0];
    first = 1;
  }
  std::vector<std::string> seen;
  for (size_t i = first; i < parts.size(); ++i) {
    pp.apply(s, parts[i], seen);
    s.text += (s.text.empty() ? "" : "+") + parts[i];
  }
  return s;
}

KVPrefillSpec kv_prefill_spec_from_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("--kv-config '", path, "': cannot open the file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    fail("--kv-config '", path, "': not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail("--kv-config '", path, "': expected a JSON object such as {\"kv\": \"svd\", \"quant\": \"4\"}");
  // one file holds both parts: the low-rank keys (read by kv_spec_from_json_file) and the prefill keys here
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!kv_config_key_known(it.key()))
      fail("--kv-config '", path, "': unknown key \"", it.key(), "\" (known: ", kv_config_keys_text(), ")");
  KVPrefillSpec s;
  PartParser pp{path};
  std::vector<std::string> seen;
  for (const char* key : {"quant", "keep", "evict", "imp"}) {
    if (!j.contains(key)) continue;
    if (!j[key].is_string()) fail("--kv-config '", path, "': \"", key, "\" must be a string such as \"8/4/2=0.2/0.5/0.3\"");
    const std::string part = std::string(key) + ":" + j[key].get<std::string>();
    pp.apply(s, part, seen);
    s.text += (s.text.empty() ? "" : "+") + part;
  }
  return s;
}

void kv_prefill_spec_check(const KVPrefillSpec& s, const Config& c, bool lowrank) {
  if (s.quant.on && !lowrank) {  // (svd: rank-space rows take any group, the last one short; kernels/quant_cpu.h)
    const int g = s.quant.group == 0 || (s.quant.group < 0 && c.head_dim % 32 != 0) ? c.head_dim
                  : s.quant.group < 0                                                 ? 32
                                                                                      : s.quant.group;
    if (g % 4 != 0 || c.head_dim % g != 0)
      fail("--kv quant: group ", g, " must divide head_dim ", c.head_dim, " (and be a multiple of 4); use group=head");
  }
  if (s.quant.on && s.quant.hadamard && lowrank)
    fail("--kv quant: hadamard rotates head_dim rows; with svd the rows are already in the profile's basis "
         "(decorrelated, by importance): drop hadamard or the svd part");
  if (s.quant.on && s.quant.hadamard && (c.head_dim & (c.head_dim - 1)) != 0)
    fail("--kv quant: hadamard needs head_dim a power of two, the model has ", c.head_dim, "; drop hadamard");
  if (s.keep.on && s.keep.schedule == KVKeepSchedule::list && int(s.keep.list.size()) > c.n_layers)
    fail("--kv keep: ", s.keep.list.size(), " ratios for a model of ", c.n_layers, " layers (give at most one per layer)");
  if (s.keep.on && s.keep.from >= c.n_layers)
    fail("--kv keep: from=", s.keep.from, " but the model has ", c.n_layers, " layers (layers 0..", c.n_layers - 1, ")");
}

std::string kv_prefill_spec_describe(const KVPrefillSpec& s) { return s.text; }

std::string kv_importance_describe(const KVImportanceParams& p) {
  std::ostringstream o;
  o << "imp:a=" << p.a << ",b=" << p.b << ",c=" << p.c << ",w=" << p.w << ",pool=" << p.pool << ",sinks=" << p.sinks
    << ",recent=" << p.recent;
  return o.str();
}

std::vector<float> kv_keep_schedule(const KVKeepSpec& k, int n_layers) {
  std::vector<float> r(n_layers, 1.0f);
  if (!k.on) return r;
  if (k.schedule == KVKeepSchedule::list) {
    for (int l = 0; l < n_layers; ++l) r[l] = k.list[std::min<size_t>(l, k.list.size() - 1)];
  } else {
    const int from = k.from < 0 ? std::max(1, n_layers / 4) : k.from;
    const int span = std::max(1, n_layers - from);
    for (int l = from; l < n_layers; ++l) {
      const float t = float(l - from + 1) / span;  // 1/span at `from`, 1 at the last layer
      r[l] = k.schedule == KVKeepSchedule::constant ? k.ratio
             : k.schedule == KVKeepSchedule::linear ? 1.0f - (1.0f - k.ratio) * t
                                                     : std::pow(k.ratio, t);  // pyramid: geometric
    }
  }
  for (int l = 1; l < n_layers; ++l) r[l] = std::min(r[l], r[l - 1]);  // a dropped token never comes back
  return r;
}

std::vector<float> kv_evict_budgets(const KVEvictSpec& e, int n_layers) {
  std::vector<float> b(n_layers, 1.0f);
  if (e.method == KVEvict::none) return b;
  for (int l = 0; l < n_layers; ++l) {
    // PyramidKV: an arithmetic sequence from 1.5 budget (layer 0) to 0.5 budget (last layer), mean = budget
    const float f = e.method == KVEvict::pyramidkv && n_layers > 1 ? 1.5f - float(l) / (n_layers - 1) : 1.0f;
    b[l] = std::min(1.0f, e.budget * f);
  }
  return b;
}

}  // namespace llm
