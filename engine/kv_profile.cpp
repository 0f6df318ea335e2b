// KV profiles: bases from the weights (W W^T per KV head) or from calibration text (the keys' and values' second
// moments), orthonormal (energy metric) or whitened by the score / output metric, saved as safetensors and
// checked against the model on load.
#include "engine/kv_profile.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/kv_lowrank.h"
#include "engine/llm.h"
#include "engine/model.h"
#include "kernels/linalg_cuda.h"
#include "kernels/lowrank_cpu.h"
#include "kernels/ops_cpu.h"
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
  p.k_up.resize(nb * c.head_dim * c.head_dim);
  p.v_up.resize(nb * c.head_dim * c.head_dim);
  p.k_eig.resize(nb * c.head_dim);
  p.v_eig.resize(nb * c.head_dim);
  return p;
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

// Dequantise rows [r0, r0+n) of W into out (n x cols).
void dequant_rows(const QMatrix& W, int64_t r0, int n, int cols, float* out) {
  for (int i = 0; i < n; ++i) dequantize_row(W.type, W.data + (r0 + i) * W.row_bytes, out + size_t(i) * cols, cols);
}

// out (n x n) += A^T A for A (m x n) row-major in fp32, accumulated in double.
void add_gram_cols(const float* A, int m, int n, double* out) {
  for (int k = 0; k < m; ++k) {
    const float* a = A + size_t(k) * n;
    for (int i = 0; i < n; ++i) {
      const double ai = a[i];
      for (int j = 0; j < n; ++j) out[size_t(i) * n + j] += ai * a[j];
    }
  }
}

}  // namespace

const char* kv_metric_name(KVMetric m) { return m == KVMetric::energy ? "energy" : "score"; }

void kv_rope_average(const double* C, int hd, const float* inv_freq, RopeLayout layout, int n_dist, double* out) {
  if (hd % 2 != 0 || n_dist < 1) fail("kv_rope_average: head_dim must be even and n_dist >= 1 (", hd, ", ", n_dist, ")");
  const int half = hd / 2;
  auto idx = [&](int p, int comp) { return layout == RopeLayout::interleaved ? 2 * p + comp : p + comp * half; };
  // means over D of cos/sin products of the two pairs' angles theta = -D w (the angles rope_cpu uses, in fp32)
  std::vector<double> cc(size_t(half) * half, 0.0), cs(cc.size(), 0.0), sc(cc.size(), 0.0), ss(cc.size(), 0.0);
  std::vector<double> co(half), si(half);
  for (int D = 0; D < n_dist; ++D) {
    for (int p = 0; p < half; ++p) {
      const float ang = static_cast<float>(D) * inv_freq[p];
      co[p] = std::cos(ang);
      si[p] = -std::sin(ang);  // sin(-ang)
    }
    for (int p = 0; p < half; ++p)
      for (int q = 0; q < half; ++q) {
        const size_t k = size_t(p) * half + q;
        cc[k] += co[p] * co[q];
        cs[k] += co[p] * si[q];
        sc[k] += si[p] * co[q];
        ss[k] += si[p] * si[q];
      }
  }
  for (size_t k = 0; k < cc.size(); ++k) {
    cc[k] /= n_dist;
    cs[k] /= n_dist;
    sc[k] /= n_dist;
    ss[k] /= n_dist;
  }
  // block (p, q) of R^T C R with R = [[c, -s], [s, c]] per pair: expanded into the four product means
  for (int p = 0; p < half; ++p)
    for (int q = 0; q < half; ++q) {
      const size_t k = size_t(p) * half + q;
      const double b00 = C[size_t(idx(p, 0)) * hd + idx(q, 0)], b01 = C[size_t(idx(p, 0)) * hd + idx(q, 1)];
      const double b10 = C[size_t(idx(p, 1)) * hd + idx(q, 0)], b11 = C[size_t(idx(p, 1)) * hd + idx(q, 1)];
      out[size_t(idx(p, 0)) * hd + idx(q, 0)] = b00 * cc[k] + b10 * sc[k] + b01 * cs[k] + b11 * ss[k];
      out[size_t(idx(p, 0)) * hd + idx(q, 1)] = -b00 * cs[k] - b10 * ss[k] + b01 * cc[k] + b11 * sc[k];
      out[size_t(idx(p, 1)) * hd + idx(q, 0)] = -b00 * sc[k] + b10 * cc[k] - b01 * ss[k] + b11 * cs[k];
      out[size_t(idx(p, 1)) * hd + idx(q, 1)] = b00 * ss[k] - b10 * cs[k] - b01 * sc[k] + b11 * cc[k];
    }
}

namespace {

// Eigen-decompose `batch` symmetric hd x hd matrices at a (row-major, destroyed) on the chosen device, with
// eigh_jacobi_cpu's conventions either way (kernels/linalg_cuda.h): evals (batch, hd) descending, evecs
// (batch, hd, hd) with column j the eigenvector j. The one place profile building reaches the GPU.
void eigh_batch(double* a, int hd, int batch, double* evals, double* evecs, Device device, ThreadPool* pool) {
  const size_t nn = size_t(hd) * hd;
  if (device == Device::cuda) {
    eigh_batched_cuda(a, hd, batch, evals, evecs);
    return;
  }
  // checked here, on the caller: an exception thrown on a pool worker would end the process
  for (int i = 0; i < batch; ++i) eigh_check_symmetric(a, hd, "KV profile eigensolver", i);
  parallel_for(pool, batch, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) eigh_jacobi_cpu(a + i * nn, hd, evals + i * hd, evecs + i * nn);
  });
}

// Where one block's bases go.
struct BasisOut {
  float* down;
  float* up;
  float* eig;
};

// kv_basis_whitened for a batch of blocks: C (batch, hd, hd) destroyed; M (same) or nullptr for the energy
// metric; out[b] receives block b. The eigenproblems of all blocks are solved together (two batched calls on
// cuda: the metrics', then the whitened moments'); the rest is per block on the CPU.
void kv_bases_batch(double* C, const double* M, int hd, int batch, const BasisOut* out, Device device,
                    ThreadPool* pool) {
  const size_t nn = size_t(hd) * hd;
  std::vector<double> ev(size_t(batch) * hd), vecs(size_t(batch) * nn);
  if (!M) {
    eigh_batch(C, hd, batch, ev.data(), vecs.data(), device, pool);
    for (int b = 0; b < batch; ++b)
      for (int j = 0; j < hd; ++j) {
        out[b].eig[j] = static_cast<float>(ev[size_t(b) * hd + j]);
        for (int i = 0; i < hd; ++i)
          out[b].down[size_t(j) * hd + i] = out[b].up[size_t(j) * hd + i] =
              static_cast<float>(vecs[b * nn + size_t(i) * hd + j]);
      }
    return;
  }
  // S = (M + eps I)^{1/2}, eps relative to M's mean eigenvalue: directions the metric ignores still get a
  // little weight, so S^{-1} stays bounded and calibration noise there cannot dominate
  std::vector<double> m(M, M + batch * nn), lam(size_t(batch) * hd), Q(batch * nn);
  eigh_batch(m.data(), hd, batch, lam.data(), Q.data(), device, pool);
  for (int b = 0; b < batch; ++b) {  // on the caller, before the pool runs (see eigh_batch)
    double tr = 0.0;
    for (int k = 0; k < hd; ++k) tr += std::max(lam[size_t(b) * hd + k], 0.0);
    if (!(tr > 0.0))
      fail("KV profile: the score metric of a head is zero (trace ", tr, "): make the profile with --metric energy");
  }
  std::vector<double> S(batch * nn, 0.0), Si(batch * nn, 0.0), A(batch * nn, 0.0);
  parallel_for(pool, batch, [&](int64_t b0, int64_t b1) {
    std::vector<double> T(nn);
    for (int64_t b = b0; b < b1; ++b) {
      const double* l = lam.data() + b * hd;
      const double* q = Q.data() + b * nn;
      double* s = S.data() + b * nn;
      double* si = Si.data() + b * nn;
      double tr = 0.0;
      for (int k = 0; k < hd; ++k) tr += std::max(l[k], 0.0);
      const double eps = 1e-3 * tr / hd;
      for (int k = 0; k < hd; ++k) {
        const double lk = std::max(l[k], 0.0) + eps, sq = std::sqrt(lk), isq = 1.0 / sq;
        for (int i = 0; i < hd; ++i)
          for (int j = 0; j < hd; ++j) {
            const double qq = q[size_t(i) * hd + k] * q[size_t(j) * hd + k];
            s[size_t(i) * hd + j] += sq * qq;
            si[size_t(i) * hd + j] += isq * qq;
          }
      }
      // A = S C S (symmetrised against rounding)
      const double* c = C + b * nn;
      double* a = A.data() + b * nn;
      std::fill(T.begin(), T.end(), 0.0);
      for (int i = 0; i < hd; ++i)
        for (int k = 0; k < hd; ++k) {
          const double sik = s[size_t(i) * hd + k];
          for (int j = 0; j < hd; ++j) T[size_t(i) * hd + j] += sik * c[size_t(k) * hd + j];
        }
      for (int i = 0; i < hd; ++i)
        for (int k = 0; k < hd; ++k) {
          const double t = T[size_t(i) * hd + k];
          for (int j = 0; j < hd; ++j) a[size_t(i) * hd + j] += t * s[size_t(k) * hd + j];
        }
      for (int i = 0; i < hd; ++i)
        for (int j = i + 1; j < hd; ++j)
          a[size_t(i) * hd + j] = a[size_t(j) * hd + i] = 0.5 * (a[size_t(i) * hd + j] + a[size_t(j) * hd + i]);
    }
  });
  eigh_batch(A.data(), hd, batch, ev.data(), vecs.data(), device, pool);
  parallel_for(pool, batch, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const double* s = S.data() + b * nn;
      const double* si = Si.data() + b * nn;
      const double* v = vecs.data() + b * nn;
      for (int j = 0; j < hd; ++j) {
        out[b].eig[j] = static_cast<float>(ev[b * hd + j]);
        for (int i = 0; i < hd; ++i) {
          double d = 0.0, u = 0.0;
          for (int k = 0; k < hd; ++k) {
            d += s[size_t(i) * hd + k] * v[size_t(k) * hd + j];
            u += si[size_t(i) * hd + k] * v[size_t(k) * hd + j];
          }
          out[b].down[size_t(j) * hd + i] = static_cast<float>(d);
          out[b].up[size_t(j) * hd + i] = static_cast<float>(u);
        }
      }
    }
  });
}

}  // namespace

void kv_basis_whitened(double* C, const double* M, int hd, float* down, float* up, float* eig) {
  const BasisOut out{down, up, eig};
  kv_bases_batch(C, M, hd, 1, &out, Device::cpu, nullptr);
}

std::vector<double> kv_query_moment_from_weights(const Config& c, const Weights& w, ThreadPool* pool) {
  const int hd = c.head_dim, dim = c.dim, nkv = c.n_kv_heads, gs = c.n_heads / c.n_kv_heads;
  std::vector<double> qq(size_t(c.n_layers) * nkv * hd * hd, 0.0);
  parallel_for(pool, int64_t(c.n_layers) * nkv, [&](int64_t b, int64_t e) {
    std::vector<float> rows(size_t(hd) * dim);
    for (int64_t blk = b; blk < e; ++blk) {
      const int l = static_cast<int>(blk / nkv), g = static_cast<int>(blk % nkv);
      double* out = qq.data() + size_t(blk) * hd * hd;
      for (int hh = 0; hh < gs; ++hh) {
        dequant_rows(w.layers[l].wq, int64_t(g * gs + hh) * hd, hd, dim, rows.data());
        for (int i = 0; i < hd; ++i)  // W_Q,h W_Q,h^T (hd x hd)
          for (int j = i; j < hd; ++j) {
            double s = 0.0;
            const float* a = rows.data() + size_t(i) * dim;
            const float* bb = rows.data() + size_t(j) * dim;
            for (int d = 0; d < dim; ++d) s += double(a[d]) * bb[d];
            out[size_t(i) * hd + j] += s;
            if (j != i) out[size_t(j) * hd + i] += s;
          }
      }
    }
  });
  return qq;
}

std::vector<double> kv_key_metric(const Config& c, const std::vector<double>& qq, int n_dist) {
  const int hd = c.head_dim;
  const size_t nb = size_t(c.n_layers) * c.n_kv_heads;
  if (qq.size() != nb * hd * hd) fail("kv_key_metric: the query moments do not match the model's shape");
  std::vector<float> inv(hd / 2);
  rope_inv_freq_cpu(inv.data(), hd, c.rope_theta, c.rope_scaling);
  std::vector<double> M(qq.size());
  for (size_t b = 0; b < nb; ++b)
    kv_rope_average(qq.data() + b * hd * hd, hd, inv.data(), c.rope_layout, n_dist, M.data() + b * hd * hd);
  return M;
}

std::vector<double> kv_value_metric(const Config& c, const Weights& w, ThreadPool* pool) {
  const int hd = c.head_dim, qd = c.n_heads * hd, nkv = c.n_kv_heads, gs = c.n_heads / c.n_kv_heads;
  std::vector<double> M(size_t(c.n_layers) * nkv * hd * hd, 0.0);
  parallel_for(pool, int64_t(c.n_layers) * nkv, [&](int64_t b, int64_t e) {
    std::vector<float> row(qd);
    std::vector<float> blockrows(size_t(c.dim) * hd);
    for (int64_t blk = b; blk < e; ++blk) {
      const int l = static_cast<int>(blk / nkv), g = static_cast<int>(blk % nkv);
      const QMatrix& W = w.layers[l].wo;  // (dim, n_heads*hd)
      double* out = M.data() + size_t(blk) * hd * hd;
      for (int hh = 0; hh < gs; ++hh) {
        const int h = g * gs + hh;
        for (int o = 0; o < c.dim; ++o) {
          dequantize_row(W.type, W.data + int64_t(o) * W.row_bytes, row.data(), qd);
          std::copy(row.begin() + size_t(h) * hd, row.begin() + size_t(h + 1) * hd, blockrows.begin() + size_t(o) * hd);
        }
        add_gram_cols(blockrows.data(), c.dim, hd, out);  // W_O,h^T W_O,h
      }
    }
  });
  return M;
}

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
                                  const std::function<void(float)>& on_progress, KVMetric metric, Device device) {
  KVProfile p = profile_shell(c, w, "weights");
  p.metric = metric;
  const int hd = c.head_dim, dim = c.dim, nkv = c.n_kv_heads;
  std::vector<double> mk, mv;
  if (metric == KVMetric::score) {
    mk = kv_key_metric(c, kv_query_moment_from_weights(c, w, pool), kKVScoreDistances);
    mv = kv_value_metric(c, w, pool);
  }
  // per layer: the 2 * n_kv_heads Gram matrices (K and V of every KV head) in parallel, then their bases as
  // one batch (one batched solve per stage on cuda)
  const size_t nn = size_t(hd) * hd;
  const int batch = 2 * nkv;
  std::vector<double> gram(batch * nn), metric_l;
  std::vector<BasisOut> out(batch);
  for (int l = 0; l < c.n_layers; ++l) {
    parallel_for(pool, batch, [&](int64_t b, int64_t e) {
      std::vector<float> rows(size_t(hd) * dim);
      for (int64_t task = b; task < e; ++task) {
        const int g = static_cast<int>(task / 2);
        const bool is_k = task % 2 == 0;
        const QMatrix& W = is_k ? w.layers[l].wk : w.layers[l].wv;
        dequant_rows(W, int64_t(g) * hd, hd, dim, rows.data());
        double* m = gram.data() + task * nn;
        for (int i = 0; i < hd; ++i)  // W W^T (hd x hd): its eigenvectors are W's left singular vectors
          for (int j = i; j < hd; ++j) {
            double s = 0.0;
            const float* a = rows.data() + size_t(i) * dim;
            const float* bb = rows.data() + size_t(j) * dim;
            for (int d = 0; d < dim; ++d) s += double(a[d]) * bb[d];
            m[size_t(i) * hd + j] = m[size_t(j) * hd + i] = s;
          }
      }
    });
    if (metric == KVMetric::score) metric_l.resize(batch * nn);
    for (int task = 0; task < batch; ++task) {
      const int g = task / 2;
      const bool is_k = task % 2 == 0;
      const size_t blk = size_t(l) * nkv + g;
      out[task] = {(is_k ? p.k_basis : p.v_basis).data() + blk * nn, (is_k ? p.k_up : p.v_up).data() + blk * nn,
                   (is_k ? p.k_eig : p.v_eig).data() + blk * hd};
      if (metric == KVMetric::score) {
        const double* src = (is_k ? mk : mv).data() + blk * nn;
        std::copy(src, src + nn, metric_l.begin() + task * nn);
      }
    }
    kv_bases_batch(gram.data(), metric == KVMetric::score ? metric_l.data() : nullptr, hd, batch, out.data(), device,
                   pool);
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
  cal.qq.assign(cal.kk.size(), 0.0);
  cal.n_ctx = n_ctx;
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

KVProfile kv_profile_from_calibration(const Config& c, const Weights& w, const KVCalibration& cal, KVMetric metric,
                                      Device device, ThreadPool* pool) {
  if (cal.count <= 0) fail("calibration: no tokens were run through the model");
  const int hd = c.head_dim, nkv = c.n_kv_heads;
  KVProfile p = profile_shell(c, w, "calib");
  p.metric = metric;
  p.calib_tokens = cal.count;
  p.calib_ctx = cal.n_ctx;
  std::vector<double> mk, mv;
  if (metric == KVMetric::score) {
    if (cal.qq.size() != cal.kk.size()) fail("calibration: the score metric needs the queries' moments (none captured)");
    mk = kv_key_metric(c, cal.qq, std::max(1, cal.n_ctx));
    mv = kv_value_metric(c, w, pool);
  }
  // every (layer, KV head, K|V) block in one batch: the moments are already in memory
  const size_t nn = size_t(hd) * hd, nb = size_t(c.n_layers) * nkv;
  const int batch = static_cast<int>(2 * nb);
  std::vector<double> mom(batch * nn), metric_all;
  if (metric == KVMetric::score) metric_all.resize(batch * nn);
  std::vector<BasisOut> out(batch);
  for (size_t blk = 0; blk < nb; ++blk)
    for (int which = 0; which < 2; ++which) {
      const size_t task = 2 * blk + which;
      const std::vector<double>& src = which == 0 ? cal.kk : cal.vv;
      for (size_t i = 0; i < nn; ++i) mom[task * nn + i] = src[blk * nn + i] / double(cal.count);
      if (metric == KVMetric::score) {
        const double* m = (which == 0 ? mk : mv).data() + blk * nn;
        std::copy(m, m + nn, metric_all.begin() + task * nn);
      }
      out[task] = {(which == 0 ? p.k_basis : p.v_basis).data() + blk * nn,
                   (which == 0 ? p.k_up : p.v_up).data() + blk * nn, (which == 0 ? p.k_eig : p.v_eig).data() + blk * hd};
    }
  kv_bases_batch(mom.data(), metric == KVMetric::score ? metric_all.data() : nullptr, hd, batch, out.data(), device,
                 pool);
  return p;
}

double kv_projection_error(const KVProfile& p, const KVCalibration& cal, bool keys, int r,
                           const std::vector<double>& metric) {
  const int hd = p.head_dim;
  const size_t nb = size_t(p.n_layers) * p.n_kv_heads;
  if (cal.head_dim != hd || cal.n_kv_heads != p.n_kv_heads || cal.kk.size() != nb * hd * hd)
    fail("kv_projection_error: the calibration moments do not match the profile's shape");
  if (!metric.empty() && metric.size() != nb * hd * hd) fail("kv_projection_error: the metric does not match the profile's shape");
  if (r < 0 || r > hd) fail("kv_projection_error: rank ", r, " outside [0, ", hd, "]");
  double acc = 0.0;
  std::vector<double> E(size_t(hd) * hd), ME(E.size()), EC(E.size());
  for (size_t b = 0; b < nb; ++b) {
    const double* C = (keys ? cal.kk : cal.vv).data() + b * hd * hd;
    const double* M = metric.empty() ? nullptr : metric.data() + b * hd * hd;
    const float* D = (keys ? p.k_basis : p.v_basis).data() + b * hd * hd;
    const float* U = (keys ? p.k_up : p.v_up).data() + b * hd * hd;
    // E = I - sum_{j<r} up_j down_j^T
    for (int i = 0; i < hd; ++i)
      for (int k = 0; k < hd; ++k) {
        double s = i == k ? 1.0 : 0.0;
        for (int j = 0; j < r; ++j) s -= double(U[size_t(j) * hd + i]) * D[size_t(j) * hd + k];
        E[size_t(i) * hd + k] = s;
      }
    // num = tr(E^T M E C) = sum_{a,b} (M E)_{ab} (E C)_{ab}; den = tr(M C)
    double num = 0.0, den = 0.0;
    for (int i = 0; i < hd; ++i)
      for (int k = 0; k < hd; ++k) {
        double me = 0.0, ec = 0.0;
        for (int t = 0; t < hd; ++t) {
          me += (M ? M[size_t(i) * hd + t] : (i == t ? 1.0 : 0.0)) * E[size_t(t) * hd + k];
          ec += E[size_t(i) * hd + t] * C[size_t(t) * hd + k];
        }
        ME[size_t(i) * hd + k] = me;
        EC[size_t(i) * hd + k] = ec;
      }
    for (int i = 0; i < hd; ++i)
      for (int k = 0; k < hd; ++k) {
        num += ME[size_t(i) * hd + k] * EC[size_t(i) * hd + k];
        den += (M ? M[size_t(i) * hd + k] : (i == k ? 1.0 : 0.0)) * C[size_t(k) * hd + i];
      }
    acc += den > 0 ? num / den : 0.0;
  }
  return acc / double(nb);
}

void kv_profile_save(const KVProfile& p, const std::string& path) {
  const std::vector<int64_t> bshape = {p.n_layers, p.n_kv_heads, p.head_dim, p.head_dim};
  const std::vector<int64_t> eshape = {p.n_layers, p.n_kv_heads, p.head_dim};
  std::map<std::string, std::string> meta = {
      {"format", "llm-kv-profile"},
      {"version", "2"},
      {"basis", p.basis},
      {"metric", kv_metric_name(p.metric)},
      {"arch", p.arch},
      {"n_layers", std::to_string(p.n_layers)},
      {"n_kv_heads", std::to_string(p.n_kv_heads)},
      {"head_dim", std::to_string(p.head_dim)},
      {"dim", std::to_string(p.dim)},
      {"model_hash", p.model_hash},
      {"calib_tokens", std::to_string(p.calib_tokens)},
      {"calib_source", p.calib_source},
      {"calib_ctx", std::to_string(p.calib_ctx)},
  };
  safetensors_write(path,
                    {{"k_basis", GGMLType::F32, bshape, p.k_basis.data()},
                     {"v_basis", GGMLType::F32, bshape, p.v_basis.data()},
                     {"k_up", GGMLType::F32, bshape, p.k_up.data()},
                     {"v_up", GGMLType::F32, bshape, p.v_up.data()},
                     {"k_eigenvalues", GGMLType::F32, eshape, p.k_eig.data()},
                     {"v_eigenvalues", GGMLType::F32, eshape, p.v_eig.data()}},
                    meta);
}

KVProfile kv_profile_load(const std::string& path) {
  SafetensorsFile f = safetensors_open(path);
  if (meta_get(f, "format") != "llm-kv-profile")
    fail(path, ": not a KV profile (metadata format is '", meta_get(f, "format"), "'; make one with `llm compress`)");
  const std::string version = meta_get(f, "version");
  if (version != "1" && version != "2")
    fail(path, ": KV profile version ", version, " is not supported (1 and 2 are): make it again with `llm compress`");
  KVProfile p;
  p.basis = meta_get(f, "basis");
  if (p.basis != "weights" && p.basis != "calib") fail(path, ": unknown basis '", p.basis, "'");
  if (version != "1") {
    const std::string metric = meta_get(f, "metric");
    if (metric != "energy" && metric != "score") fail(path, ": unknown metric '", metric, "' (energy or score)");
    p.metric = metric == "score" ? KVMetric::score : KVMetric::energy;
  }
  p.arch = meta_get(f, "arch");
  p.n_layers = meta_int(f, "n_layers");
  p.n_kv_heads = meta_int(f, "n_kv_heads");
  p.head_dim = meta_int(f, "head_dim");
  p.dim = meta_int(f, "dim");
  p.model_hash = meta_get(f, "model_hash");
  if (f.metadata.count("calib_tokens")) p.calib_tokens = std::stoll("0" + f.metadata.at("calib_tokens"));
  if (f.metadata.count("calib_source")) p.calib_source = f.metadata.at("calib_source");
  if (f.metadata.count("calib_ctx")) p.calib_ctx = static_cast<int>(std::stoll("0" + f.metadata.at("calib_ctx")));
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
  if (version == "1") {  // orthonormal bases: rebuild with the same rows
    p.k_up = p.k_basis;
    p.v_up = p.v_basis;
  } else {
    load("k_up", {p.n_layers, p.n_kv_heads, p.head_dim, p.head_dim}, p.k_up);
    load("v_up", {p.n_layers, p.n_kv_heads, p.head_dim, p.head_dim}, p.v_up);
  }
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
