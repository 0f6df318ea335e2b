// KV profiles: bases from the weights (eigenvectors of W W^T per KV head) or from calibration text (eigenvectors
// of the keys' and values' second moments), saved as safetensors and checked against the model on load.
#include "engine/kv_profile.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/kv_lowrank.h"
#include "engine/llm.h"
#include "engine/model.h"
#include "kernels/lowrank_cpu.h"
#include "kernels/threadpool_cpu.h"
#include "loader/error.h"
#include "loader/ggml_quants.h"
#include "loader/safetensors.h"

namespace llm {

namespace {

uint64_t fnv1a(uint64_t h, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

KVProfile profile_shell(const Config& c, const Weights& w, const char* basis) {
  KVProfile p;
  p.basis = basis;
  p.arch = c.arch;
  p.n_layers = c.n_layers;
  p.n_kv_heads = c.n_kv_heads;
  p.head_dim = c.head_dim;
  p.dim = c.dim;
  p.model_hash = kv_model_hash(w);
  const size_t nb = size_t(c.n_layers) * c.n_kv_heads;
  p.k_basis.resize(nb * c.head_dim * c.head_dim);
  p.v_basis.resize(nb * c.head_dim * c.head_dim);
  p.k_eig.resize(nb * c.head_dim);
  p.v_eig.resize(nb * c.head_dim);
  return p;
}

// Eigen-decompose the symmetric hd x hd matrix m (destroyed) into basis rows (U^T) and eigenvalues.
void basis_from_symmetric(double* m, int hd, float* rows, float* eig) {
  std::vector<double> ev(hd), vecs(size_t(hd) * hd);
  eigh_jacobi_cpu(m, hd, ev.data(), vecs.data());
  for (int j = 0; j < hd; ++j) {
    eig[j] = static_cast<float>(ev[j]);
    for (int i = 0; i < hd; ++i) rows[size_t(j) * hd + i] = static_cast<float>(vecs[size_t(i) * hd + j]);
  }
}

std::string meta_get(const SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata.find(key);
  if (it == f.metadata.end())
    fail(f.path, ": not a KV profile: metadata '", key, "' missing (make profiles with `llm compress`)");
  return it->second;
}

int meta_int(const SafetensorsFile& f, const std::string& key) {
  const std::string s = meta_get(f, key);
  try {
    return std::stoi(s);
  } catch (...) {
    fail(f.path, ": metadata '", key, "' is not a number: '", s, "'");
  }
}

}  // namespace

std::string kv_model_hash(const Weights& w) {
  if (w.layers.empty()) fail("kv_model_hash: the model has no layers");
  const LayerWeights& L = w.layers[0];
  uint64_t h = 14695981039346656037ull;
  h = fnv1a(h, L.wk.data, L.wk.row_bytes * L.wk.rows);
  h = fnv1a(h, L.wv.data, L.wv.row_bytes * L.wv.rows);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

KVProfile kv_profile_from_weights(const Config& c, const Weights& w, ThreadPool* pool,
                                  const std::function<void(float)>& on_progress) {
  KVProfile p = profile_shell(c, w, "weights");
  const int hd = c.head_dim, dim = c.dim, nkv = c.n_kv_heads;
  for (int l = 0; l < c.n_layers; ++l) {
    parallel_for(pool, int64_t(nkv) * 2, [&](int64_t b, int64_t e) {
      std::vector<float> rows(size_t(hd) * dim);
      std::vector<double> m(size_t(hd) * hd);
      for (int64_t task = b; task < e; ++task) {
        const int g = static_cast<int>(task / 2);
        const bool is_k = task % 2 == 0;
        const QMatrix& W = is_k ? w.layers[l].wk : w.layers[l].wv;
        for (int i = 0; i < hd; ++i)
          dequantize_row(W.type, W.data + (int64_t(g) * hd + i) * W.row_bytes, rows.data() + size_t(i) * dim, dim);
        for (int i = 0; i < hd; ++i)  // W W^T (hd x hd): its eigenvectors are W's left singular vectors
          for (int j = i; j < hd; ++j) {
            double s = 0.0;
            const float* a = rows.data() + size_t(i) * dim;
            const float* bb = rows.data() + size_t(j) * dim;
            for (int d = 0; d < dim; ++d) s += double(a[d]) * bb[d];
            m[size_t(i) * hd + j] = m[size_t(j) * hd + i] = s;
          }
        const size_t blk = size_t(l) * nkv + g;
        basis_from_symmetric(m.data(), hd, (is_k ? p.k_basis : p.v_basis).data() + blk * hd * hd,
                             (is_k ? p.k_eig : p.v_eig).data() + blk * hd);
      }
    });
    if (on_progress) on_progress(float(l + 1) / c.n_layers);
  }
  return p;
}

KVCalibration kv_calibration_collect(Model& model, const std::vector<int>& tokens, int n_ctx,
                                     const std::function<void(float)>& on_progress) {
  const Config& c = model.config();
  const Weights& w = model.weights();
  if (tokens.size() < 2) fail("calibration: the text is too short (", tokens.size(), " tokens)");
  if (n_ctx < 2) fail("calibration: the window must be at least 2 tokens, got ", n_ctx);
  const int hd = c.head_dim, nkv = c.n_kv_heads;
  KVCalibration cal;
  cal.head_dim = hd;
  cal.n_kv_heads = nkv;
  cal.kk.assign(size_t(c.n_layers) * nkv * hd * hd, 0.0);
  cal.vv.assign(cal.kk.size(), 0.0);
  KVLowRank capture;
  capture.calib = &cal;
  KVCache kv = kvcache_create(c, n_ctx);
  kv.lowrank = &capture;
  RunState s = runstate_create(c, std::min(256, n_ctx));
  const int64_t N = static_cast<int64_t>(tokens.size());
  for (int64_t b = 0; b < N; b += n_ctx) {
    const int len = static_cast<int>(std::min<int64_t>(n_ctx, N - b));
    kv.n = 0;
    forward_cpu(c, w, kv, s, tokens.data() + b, len, LogitsMode::last, model.thread_pool());
    if (on_progress) on_progress(float(b + len) / float(N));
  }
  return cal;
}

KVProfile kv_profile_from_calibration(const Config& c, const Weights& w, const KVCalibration& cal) {
  if (cal.count <= 0) fail("calibration: no tokens were run through the model");
  const int hd = c.head_dim, nkv = c.n_kv_heads;
  KVProfile p = profile_shell(c, w, "calib");
  p.calib_tokens = cal.count;
  for (int l = 0; l < c.n_layers; ++l)
    for (int g = 0; g < nkv; ++g) {
      const size_t blk = size_t(l) * nkv + g;
      for (int which = 0; which < 2; ++which) {
        const std::vector<double>& src = which == 0 ? cal.kk : cal.vv;
        std::vector<double> m(src.begin() + blk * hd * hd, src.begin() + (blk + 1) * hd * hd);
        for (double& x : m) x /= double(cal.count);
        basis_from_symmetric(m.data(), hd, (which == 0 ? p.k_basis : p.v_basis).data() + blk * hd * hd,
                             (which == 0 ? p.k_eig : p.v_eig).data() + blk * hd);
      }
    }
  return p;
}

double kv_projection_error(const KVProfile& p, const KVCalibration& cal, bool keys, int r) {
  const int hd = p.head_dim;
  if (cal.head_dim != hd || cal.n_kv_heads != p.n_kv_heads || cal.kk.size() != size_t(p.n_layers) * p.n_kv_heads * hd * hd)
    fail("kv_projection_error: the calibration moments do not match the profile's shape");
  double acc = 0.0;
  for (int b = 0; b < p.n_layers * p.n_kv_heads; ++b) {
    const double* C = (keys ? cal.kk : cal.vv).data() + size_t(b) * hd * hd;
    const float* U = (keys ? p.k_basis : p.v_basis).data() + size_t(b) * hd * hd;
    double tr = 0.0, kept = 0.0;
    for (int i = 0; i < hd; ++i) tr += C[size_t(i) * hd + i];
    for (int j = 0; j < r; ++j) {
      const float* u = U + size_t(j) * hd;
      for (int a = 0; a < hd; ++a)
        for (int bb = 0; bb < hd; ++bb) kept += double(u[a]) * C[size_t(a) * hd + bb] * u[bb];
    }
    acc += tr > 0 ? 1.0 - kept / tr : 0.0;
  }
  return acc / (p.n_layers * p.n_kv_heads);
}

void kv_profile_save(const KVProfile& p, const std::string& path) {
  const std::vector<int64_t> bshape = {p.n_layers, p.n_kv_heads, p.head_dim, p.head_dim};
  const std::vector<int64_t> eshape = {p.n_layers, p.n_kv_heads, p.head_dim};
  std::map<std::string, std::string> meta = {
      {"format", "llm-kv-profile"},
      {"version", "1"},
      {"basis", p.basis},
      {"arch", p.arch},
      {"n_layers", std::to_string(p.n_layers)},
      {"n_kv_heads", std::to_string(p.n_kv_heads)},
      {"head_dim", std::to_string(p.head_dim)},
      {"dim", std::to_string(p.dim)},
      {"model_hash", p.model_hash},
      {"calib_tokens", std::to_string(p.calib_tokens)},
      {"calib_source", p.calib_source},
  };
  safetensors_write(path,
                    {{"k_basis", GGMLType::F32, bshape, p.k_basis.data()},
                     {"v_basis", GGMLType::F32, bshape, p.v_basis.data()},
                     {"k_eigenvalues", GGMLType::F32, eshape, p.k_eig.data()},
                     {"v_eigenvalues", GGMLType::F32, eshape, p.v_eig.data()}},
                    meta);
}

KVProfile kv_profile_load(const std::string& path) {
  SafetensorsFile f = safetensors_open(path);
  if (meta_get(f, "format") != "llm-kv-profile")
    fail(path, ": not a KV profile (metadata format is '", meta_get(f, "format"), "'; make one with `llm compress`)");
  if (meta_get(f, "version") != "1") fail(path, ": KV profile version ", meta_get(f, "version"), " is not supported (1 is)");
  KVProfile p;
  p.basis = meta_get(f, "basis");
  if (p.basis != "weights" && p.basis != "calib") fail(path, ": unknown basis '", p.basis, "'");
  p.arch = meta_get(f, "arch");
  p.n_layers = meta_int(f, "n_layers");
  p.n_kv_heads = meta_int(f, "n_kv_heads");
  p.head_dim = meta_int(f, "head_dim");
  p.dim = meta_int(f, "dim");
  p.model_hash = meta_get(f, "model_hash");
  if (f.metadata.count("calib_tokens")) p.calib_tokens = std::stoll("0" + f.metadata.at("calib_tokens"));
  if (f.metadata.count("calib_source")) p.calib_source = f.metadata.at("calib_source");
  if (p.n_layers <= 0 || p.n_kv_heads <= 0 || p.head_dim <= 0 || p.head_dim > 1024)
    fail(path, ": bad profile shape (layers ", p.n_layers, ", kv heads ", p.n_kv_heads, ", head_dim ", p.head_dim, ")");
  auto load = [&](const char* name, std::vector<int64_t> shape, std::vector<float>& dst) {
    const TensorView* t = f.find(name);
    if (!t) fail(path, ": tensor '", name, "' missing: not a complete KV profile; make it again with `llm compress`");
    if (t->type != GGMLType::F32 || t->shape != shape)
      fail(path, ": tensor '", name, "' must be F32 with the profile's shape; remake the profile with `llm compress`");
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    dst.resize(n);
    tensor_to_f32(*t, dst.data());
    for (float x : dst)
      if (!std::isfinite(x)) fail(path, ": tensor '", name, "' holds NaN/Inf");
  };
  load("k_basis", {p.n_layers, p.n_kv_heads, p.head_dim, p.head_dim}, p.k_basis);
  load("v_basis", {p.n_layers, p.n_kv_heads, p.head_dim, p.head_dim}, p.v_basis);
  load("k_eigenvalues", {p.n_layers, p.n_kv_heads, p.head_dim}, p.k_eig);
  load("v_eigenvalues", {p.n_layers, p.n_kv_heads, p.head_dim}, p.v_eig);
  return p;
}

void kv_profile_check(const KVProfile& p, const Config& c, const Weights& w, const std::string& path) {
  if (p.arch != c.arch || p.n_layers != c.n_layers || p.n_kv_heads != c.n_kv_heads || p.head_dim != c.head_dim ||
      p.dim != c.dim)
    fail("KV profile '", path, "' was made for another model (", p.arch, ", ", p.n_layers, " layers, ", p.n_kv_heads,
         " KV heads, head_dim ", p.head_dim, ", dim ", p.dim, "); this model has ", c.arch, ", ", c.n_layers,
         " layers, ", c.n_kv_heads, " KV heads, head_dim ", c.head_dim, ", dim ", c.dim,
         ": make a profile for this model with `llm compress -m MODEL`");
  const std::string h = kv_model_hash(w);
  if (p.model_hash != h)
    fail("KV profile '", path, "' was made for another model of the same shape (weights hash ", p.model_hash,
         ", this model's is ", h, "): make a profile for this model with `llm compress -m MODEL`");
}

}  // namespace llm
