/* CPU kernels of the training step, float32: what several small PyTorch ops each do in a pass of
 * their own, done here in one pass (see lit_linear/native.py for why, and for the PyTorch code
 * these transcribe: classifier.preprocess, losses.softmax_scores_grad, losses.svm_scores_grad,
 * optim.GridSGD._prepare).
 *
 * Conventions: every tensor is passed as a data pointer plus sizes and element strides; the
 * Python side checks dtypes, shapes, devices and contiguity before calling. Results never
 * depend on the number of threads: work is split into fixed blocks and partial sums are added
 * in block order. NaN and infinity propagate as they do in the PyTorch code, since a config is
 * frozen when its loss is not finite.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LL_INLINE static inline __attribute__((always_inline))

/* exp(x) for x <= 0 (scores minus their row maximum), ~1 ulp, written so that the compiler can
 * vectorise a loop over it (libm's expf is a call per element). Cephes' polynomial on
 * |r| <= ln2/2 after x = n ln2 + r; exp(x) < 2^-126 is returned as 0; NaN stays NaN. */
LL_INLINE float ll_exp(float x) {
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float n = (x * log2e + round_magic) - round_magic;
    float r = x - n * ln2_hi;
    r = r - n * ln2_lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t e = (int32_t)n;
    e = e < -126 ? -126 : (e > 127 ? 127 : e); /* a finite scale even for garbage n (NaN input) */
    union { int32_t i; float f; } scale = {.i = (e + 127) << 23};
    float y = p * scale.f;
    return x < -87.3f ? 0.0f : y; /* NaN < -87.3 is false: NaN * scale stays NaN */
}

/* --- preprocessing ------------------------------------------------------------------------- */

/* out (n, p + 1) = split[rows[i]] (p uint8 each) * scale - mean (p,), then a column of ones; rows
 * NULL: the first n rows in order. With rows, the minibatch's gather and its preprocessing are one
 * pass. (PyTorch adds -mean to scale * x, as one fused multiply-add: the same number.) Returns 0;
 * -1 (nothing written) if a row lies outside the split's num_rows. */
int ll_preprocess(const uint8_t *split, int64_t num_rows, const int64_t *rows, int64_t n, int64_t p, const float *mean,
                  float scale, float *out, int threads) {
    for (int64_t i = 0; rows != NULL && i < n; i++)
        if (rows[i] < 0 || rows[i] >= num_rows) return -1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *row = split + (rows != NULL ? rows[i] : i) * p;
        float *o = out + i * (p + 1);
#pragma omp simd
        for (int64_t j = 0; j < p; j++) o[j] = scale * (float)row[j] - mean[j];
        o[p] = 1.0f;
    }
    return 0;
}

/* --- loss heads: scores (N, K*C) -> data loss (K,), and dL/dscores written over the scores ---- */

/* Row n of the softmax head. s points at the row's first score; sc is the stride between its
 * K*C scores (1 for a contiguous row, so that the always-inlined copy below vectorises).
 * work holds 2*K*C floats. */
LL_INLINE void softmax_row(float *s, int64_t sc, int64_t K, int64_t C, int64_t y, float n_rows, float inv_n,
                           float *row_loss, float *work) {
    const int64_t KC = K * C;
    float *shift = work, *divisor = work + KC; /* per column: the row max of its config, then N * sum */
    for (int64_t k = 0; k < K; k++) {
        float m = s[(k * C) * sc];
        int nan = m != m;
        for (int64_t c = 1; c < C; c++) {
            float v = s[(k * C + c) * sc];
            nan |= v != v;
            m = v > m ? v : m;
        }
        if (nan) m = NAN; /* as amax: a NaN score makes the row NaN */
        row_loss[k] = -(s[(k * C + y) * sc] - m); /* log(sum) is added below */
        for (int64_t c = 0; c < C; c++) shift[k * C + c] = m;
    }
#pragma omp simd
    for (int64_t j = 0; j < KC; j++) s[j * sc] = ll_exp(s[j * sc] - shift[j]);
    for (int64_t k = 0; k < K; k++) {
        float sum = 0.0f;
        for (int64_t c = 0; c < C; c++) sum += s[(k * C + c) * sc];
        row_loss[k] += logf(sum);
        const float d = sum * n_rows;
        for (int64_t c = 0; c < C; c++) divisor[k * C + c] = d;
    }
#pragma omp simd
    for (int64_t j = 0; j < KC; j++) s[j * sc] /= divisor[j];
    for (int64_t k = 0; k < K; k++) s[(k * C + y) * sc] -= inv_n;
}

/* Row n of the multiclass hinge head (margin 1; at a margin of exactly 0 the subgradient is 0). */
LL_INLINE void svm_row(float *s, int64_t sc, int64_t K, int64_t C, int64_t y, float inv_n, float *row_loss) {
    for (int64_t k = 0; k < K; k++) {
        float *g = s + k * C * sc;
        const float correct = g[y * sc];
        float total = 0.0f, violations = 0.0f;
        for (int64_t c = 0; c < C; c++) {
            if (c == y) continue;
            float v = g[c * sc] - correct + 1.0f;
            float margin = v > 0.0f ? v : (v != v ? v : 0.0f); /* clamp_min(0) keeps NaN */
            total += margin;
            float hit = margin > 0.0f ? 1.0f : 0.0f;
            violations += hit;
            g[c * sc] = hit * inv_n;
        }
        g[y * sc] = -violations * inv_n;
        row_loss[k] = total;
    }
}

#define ROWS_PER_BLOCK 16

/* loss (K,) and dscores over scores (N, K*C) with strides (sn, sc). kind 0: softmax, 1: svm.
 * row_loss: N*K floats of scratch. Returns 0; -1 if scratch could not be allocated; -2 if a
 * label lies outside [0, C) (its row is left alone: it would index outside the row). */
int ll_scores_grad(int kind, float *scores, int64_t N, int64_t K, int64_t C, int64_t sn, int64_t sc, const int64_t *y,
                   float *loss, float *row_loss, int threads) {
    const float n_rows = (float)N, inv_n = 1.0f / n_rows;
    const int64_t blocks = (N + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
    int failed = 0, bad_label = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed, bad_label)
    {
        float *work = kind == 0 ? malloc(sizeof(float) * 2 * K * C) : NULL;
        if (kind == 0 && work == NULL) failed = 1;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; b++) {
            if (kind == 0 && work == NULL) continue;
            const int64_t hi = (b + 1) * ROWS_PER_BLOCK < N ? (b + 1) * ROWS_PER_BLOCK : N;
            for (int64_t n = b * ROWS_PER_BLOCK; n < hi; n++) {
                if (y[n] < 0 || y[n] >= C) {
                    bad_label = 1;
                    continue;
                }
                float *s = scores + n * sn;
                if (kind == 0 && sc == 1)
                    softmax_row(s, 1, K, C, y[n], n_rows, inv_n, row_loss + n * K, work);
                else if (kind == 0)
                    softmax_row(s, sc, K, C, y[n], n_rows, inv_n, row_loss + n * K, work);
                else if (sc == 1)
                    svm_row(s, 1, K, C, y[n], inv_n, row_loss + n * K);
                else
                    svm_row(s, sc, K, C, y[n], inv_n, row_loss + n * K);
            }
        }
        free(work);
    }
    if (failed) return -1;
    if (bad_label) return -2;
    /* The mean over rows, summed in row order (the same for any number of threads). */
    for (int64_t k = 0; k < K; k++) {
        double total = 0.0;
        for (int64_t n = 0; n < N; n++) total += row_loss[n * K + k];
        loss[k] = (float)(total / (double)N);
    }
    return 0;
}

/* --- regulariser ------------------------------------------------------------------------------ */

#define NORM_ROWS_PER_BLOCK 256
#define NORM_COLS 64

/* Rows [lo, hi) of W (row stride KC), columns [j0, j0 + width), width <= NORM_COLS: sums[j] =
 * the sum of their squares (in row order), then each scaled by scale[j0 + j]. Always inlined, so a
 * call with width NORM_COLS has a fixed trip count and the compiler keeps acc and f in vector
 * registers: summed in memory (one store per element) the pass ran at half the speed, or worse
 * where the sums' address aliased W's rows in the store buffer. */
LL_INLINE void scale_sq_norms_cols(float *W, int64_t KC, int64_t lo, int64_t hi, int64_t j0, int64_t width,
                                   const float *scale, float *sums) {
    float acc[NORM_COLS], f[NORM_COLS];
    for (int64_t j = 0; j < width; j++) {
        acc[j] = 0.0f;
        f[j] = scale[j0 + j];
    }
    for (int64_t i = lo; i < hi; i++) {
        float *w = W + i * KC + j0;
#pragma omp simd
        for (int64_t j = 0; j < width; j++) {
            acc[j] += w[j] * w[j];
            w[j] *= f[j];
        }
    }
    memcpy(sums, acc, sizeof(float) * width);
}

/* One pass over a contiguous W (D, K*C): out (K,) = ||W_k||^2 of W as it was, and each column j
 * scaled by scale[j] (the regulariser's shrink 1 - 2 lr reg). partial: ceil(D / 256) * K*C
 * floats of scratch. Each block of 256 rows is walked NORM_COLS columns at a time. */
static void ll_scale_sq_norms(float *W, int64_t D, int64_t K, int64_t C, const float *scale, float *out,
                              float *partial, int threads) {
    const int64_t KC = K * C;
    const int64_t blocks = (D + NORM_ROWS_PER_BLOCK - 1) / NORM_ROWS_PER_BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t lo = b * NORM_ROWS_PER_BLOCK, hi = lo + NORM_ROWS_PER_BLOCK < D ? lo + NORM_ROWS_PER_BLOCK : D;
        int64_t j0 = 0;
        for (; j0 + NORM_COLS <= KC; j0 += NORM_COLS)
            scale_sq_norms_cols(W, KC, lo, hi, j0, NORM_COLS, scale, partial + b * KC + j0);
        if (j0 < KC) /* the last, narrower columns */
            scale_sq_norms_cols(W, KC, lo, hi, j0, KC - j0, scale, partial + b * KC + j0);
    }
    for (int64_t k = 0; k < K; k++) {
        double total = 0.0;
        for (int64_t b = 0; b < blocks; b++)
            for (int64_t c = 0; c < C; c++) total += partial[b * KC + k * C + c];
        out[k] = (float)total;
    }
}

/* --- the optimizer's per-config work --------------------------------------------------------- */

/* Everything GridSGD.step does besides the gradient product, in one call (transcribes its
 * PyTorch code; a dozen small ops there cost ~0.2 ms a step next to MKL's products):
 *   lr_k    = base_lr_k * live_k * decay
 *   norms_k = ||W_k||^2, then W_k *= 1 - 2 lr_k reg_k        (one pass over W: ll_scale_sq_norms)
 *   if data_loss: loss_k = data_loss_k + reg_k * norms_k; live_k *= isfinite(loss_k); lr_k *= live_k
 *   if dscores (N, K*C), strides (sn, sc): its column k*C + c is scaled by lr_k in place
 * lr (K,) receives the step's learning rates; loss (K,) the norms, then (with data_loss) the loss.
 * scratch: (ceil(D / 256) + 1) * K*C floats. */
void ll_grid_sgd_prepare(float *W, int64_t D, int64_t K, int64_t C, const float *base_lr, const float *reg, float *live,
                         float decay, const float *data_loss, float *loss, float *lr, float *dscores, int64_t N,
                         int64_t sn, int64_t sc, float *scratch, int threads) {
    const int64_t KC = K * C;
    float *shrink = scratch, *partial = scratch + KC;
    for (int64_t k = 0; k < K; k++) {
        lr[k] = base_lr[k] * live[k] * decay;
        const float s = lr[k] * reg[k] * -2.0f + 1.0f;
        for (int64_t c = 0; c < C; c++) shrink[k * C + c] = s;
    }
    float *norms = loss; /* the norms are turned into the loss in place */
    ll_scale_sq_norms(W, D, K, C, shrink, norms, partial, threads);
    if (data_loss != NULL) {
        for (int64_t k = 0; k < K; k++) {
            loss[k] = data_loss[k] + reg[k] * norms[k];
            live[k] *= isfinite(loss[k]) ? 1.0f : 0.0f;
            lr[k] *= live[k];
        }
    }
    if (dscores == NULL) return;
    float *step_lr = shrink; /* reused: one factor per column */
    for (int64_t k = 0; k < K; k++)
        for (int64_t c = 0; c < C; c++) step_lr[k * C + c] = lr[k];
#pragma omp parallel for num_threads(threads) schedule(static) if (N * KC > 65536)
    for (int64_t n = 0; n < N; n++) {
        float *row = dscores + n * sn;
        if (sc == 1) {
#pragma omp simd
            for (int64_t j = 0; j < KC; j++) row[j] *= step_lr[j];
        } else {
            for (int64_t j = 0; j < KC; j++) row[j * sc] *= step_lr[j];
        }
    }
}
/* --- CRC-32C (Castagnoli), for TensorBoard's event records (lit_linear/event_crc.py) ----------- */

static uint32_t crc_table[8][256];
static int crc_ready = 0;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
    crc_ready = 1;
}

/* CRC-32C of n bytes, eight at a time ("slicing by 8"); the same value as TensorFlow's crc32c. The
 * tables are built on the first call (idempotent, so a race between threads only repeats work). */
uint32_t ll_crc32c(const uint8_t *data, int64_t n) {
    if (!crc_ready) crc_init();
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24);
        uint32_t hi = (uint32_t)data[4] | (uint32_t)data[5] << 8 | (uint32_t)data[6] << 16 | (uint32_t)data[7] << 24;
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF] ^
            crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
            crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        data += 8;
        n -= 8;
    }
    while (n-- > 0) c = (c >> 8) ^ crc_table[0][(c ^ *data++) & 0xFF];
    return c ^ 0xFFFFFFFFu;
}

