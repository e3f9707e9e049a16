/* AMX matrix multiply for the CPU backend, at single-precision accuracy.
 *
 * Intel's AMX tile unit (Sapphire Rapids and later) multiplies bfloat16
 * matrices into float32 accumulators, 3.2 TFLOP/s on one core measured here,
 * about sixteen times the AVX-512 FMA units' float32 peak; but one bfloat16
 * keeps only 8 of a float's 24 significant bits. So each float is split
 * into three bfloat16 terms, x = x0 + x1 + x2 (x0 = bf16(x), x1 = bf16(x -
 * x0), x2 = bf16(x - x0 - x1), exact for normal floats), and a product a*b
 * is summed as the six terms down to 2^-16 relative: a0b0 + a0b1 + a1b0 +
 * a0b2 + a1b1 + a2b0. What is left out is of order 2^-24, float32's own
 * rounding, and the sums run in float32; the result matches the AVX-512
 * kernel to float rounding (the tests hold it to the same bound against
 * double precision, and the Demucs parity tests to the same SNR). Even with six products per
 * multiply-add and the splitting, it runs the model's large products about
 * 1.5 times as fast as the AVX-512 kernel (the packing, not the tile unit,
 * now bounds it).
 *
 * Blocking as in kernels_avx512.c (Goto / BLIS): C in blocks of MC x NC,
 * the inner dimension in chunks of KC. op(B)'s chunk is packed by the
 * AVX-512 packer into float panels (so convolutions read their input
 * through the same im2col map, no buffer), then split into the three
 * bfloat16 planes in the tile unit's pair-interleaved ("VNNI") layout; A's
 * block is split into row-major bfloat16 tiles. A 32 x 32 block of C sits
 * in four accumulator tiles for a whole chunk. Edges are zero-padded in the
 * packs and masked at the stores. Each C element is summed over the inner
 * dimension in KC chunks, in order, 32 at a time in a fixed term order, so
 * results do not depend on how the backend splits C across threads.
 *
 * Tiles: 0-3 the C block (rows 0-15 / 16-31 x columns 0-15 / 16-31), 4-5
 * A's two row blocks, 6-7 B's two column blocks; all 16 rows x 64 bytes.
 * The OS must grant the process the tile state (Linux 5.16+,
 * arch_prctl(ARCH_REQ_XCOMP_PERM)); without it, or without the CPU
 * features, nn_sgemm_amx() returns NULL and the backend uses AVX-512.
 */
#define _DEFAULT_SOURCE /* syscall, for arch_prctl */
#include "cpu.h"
#include "pack_avx512.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TARGET                                                                                \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,fma,amx-tile,"      \
                          "amx-bf16")))

enum {
    TILE = 16,                 /* rows (and float columns) of a tile */
    STEP = 32,                 /* inner-dimension values per tile product */
    TILE_U16 = TILE * STEP,    /* bfloat16 values in one 1 KB tile */
    PLANES = 3,                /* bfloat16 terms per float */
    KC = 256, /* a C block sums 8 steps between stores; B's 32 columns (48 KB) stay near L1 */
    NC = 512,
    MC = 64   /* A's block (96 KB) stays in L2 */
};
enum { PACK_COLS = 512 }; /* columns per call of the float packer (<= 768) */
_Static_assert(KC % STEP == 0 && NC % (2 * TILE) == 0 && MC % (2 * TILE) == 0, "blocking");
/* B's planes, A's planes (uint16), B's float panels, two C blocks */
#define PACK_BYTES                                                                            \
    ((size_t)PLANES * KC * NC * 2 + (size_t)PLANES * MC * KC * 2 + (size_t)KC * NC * 4 +          \
     (size_t)2 * (2 * TILE) * (2 * TILE) * 4)
_Static_assert(PACK_BYTES <= NN_GEMM_PACK_FLOATS * sizeof(float), "packs exceed the scratch");

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* ---- splitting floats into bfloat16 terms ------------------------------------ */

/* The 32 bfloat16 of v as floats: lanes 0-15 in *lo, 16-31 in *hi. */
TARGET static inline void widen(__m512i v, __m512 *lo, __m512 *hi)
{
    *lo = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(v)), 16));
    *hi = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(v, 1)), 16));
}

/* The three bfloat16 terms of 32 floats (x lanes 0-15, y lanes 16-31):
 * out[q] holds term q of x in its low half and of y in its high half. */
TARGET static inline void split3(__m512i out[PLANES], __m512 x, __m512 y)
{
    for (int q = 0; q < PLANES; q++) {
        out[q] = (__m512i)_mm512_cvtne2ps_pbh(y, x);
        if (q + 1 < PLANES) {
            __m512 fx, fy;
            widen(out[q], &fx, &fy);
            x = _mm512_sub_ps(x, fx);
            y = _mm512_sub_ps(y, fy);
        }
    }
}

/* ---- packing ------------------------------------------------------------------- */

/* A's block: rows [i0, i0 + mc) of op(A), columns [p0, p0 + kc), as tiles
 * dst[((rb * steps + s) * PLANES + q) * TILE_U16]: row block rb (16 rows),
 * step s (32 columns), term q; row r of a tile is 32 consecutive bfloat16.
 * Rows past mc (up to a multiple of 32) and columns past kc are zeros. */
TARGET static void pack_a(uint16_t *dst, const float *a, int64_t lda, int trans, int i0, int mc,
                          int p0, int kc)
{
    int steps = (kc + STEP - 1) / STEP, blocks = (mc + 2 * TILE - 1) / (2 * TILE) * 2;
    for (int rb = 0; rb < blocks; rb++) {
        for (int s = 0; s < steps; s++) {
            int k0 = s * STEP, kn = kc - k0 < STEP ? kc - k0 : STEP;
            uint16_t *tile = dst + (int64_t)(rb * steps + s) * PLANES * TILE_U16;
            __m512 x[TILE], y[TILE]; /* row r: columns k0 .. +15 in x[r], +16 .. +31 in y[r] */
            int rows = mc - rb * TILE;
            if (rows > TILE) rows = TILE;
            if (!trans) {
                __mmask16 m0 = (__mmask16)(kn >= 16 ? 0xffff : (1u << kn) - 1);
                __mmask16 m1 = (__mmask16)(kn >= 32 ? 0xffff : kn > 16 ? (1u << (kn - 16)) - 1 : 0);
                for (int r = 0; r < TILE; r++) {
                    if (r >= rows) {
                        x[r] = y[r] = _mm512_setzero_ps();
                        continue;
                    }
                    const float *src = a + (int64_t)(i0 + rb * TILE + r) * lda + p0 + k0;
                    x[r] = _mm512_maskz_loadu_ps(m0, src);
                    y[r] = _mm512_maskz_loadu_ps(m1, src + 16);
                }
            } else {
                /* A^T stored: row k of a holds column k of op(A). */
                __mmask16 mr = (__mmask16)(rows <= 0 ? 0 : rows >= 16 ? 0xffff : (1u << rows) - 1);
                for (int r = 0; r < TILE; r++) {
                    const float *src = a + (int64_t)(p0 + k0 + r) * lda + i0 + rb * TILE;
                    x[r] = r < kn && mr ? _mm512_maskz_loadu_ps(mr, src) : _mm512_setzero_ps();
                    y[r] = r + 16 < kn && mr ? _mm512_maskz_loadu_ps(mr, src + 16 * lda)
                                             : _mm512_setzero_ps();
                }
                nn_transpose16(x);
                nn_transpose16(y);
            }
            for (int r = 0; r < TILE; r++) {
                __m512i t[PLANES];
                split3(t, x[r], y[r]);
                for (int q = 0; q < PLANES; q++)
                    _mm512_store_si512((__m512i *)(tile + q * TILE_U16 + r * STEP), t[q]);
            }
        }
    }
}

/* One (kc, 32) float panel (rows past kc zero up to steps * 32) to B tiles
 * dst[((cb * steps + s) * PLANES + q) * TILE_U16] for its two 16-column
 * blocks cb: row i of a tile holds rows 2i and 2i + 1 of the step
 * interleaved, column by column. */
TARGET static void split_b_panel(uint16_t *dst, const float *panel, int steps)
{
    const __m512i interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0);
    for (int cb = 0; cb < 2; cb++) {
        for (int s = 0; s < steps; s++) {
            uint16_t *tile = dst + (int64_t)(cb * steps + s) * PLANES * TILE_U16;
            for (int i = 0; i < TILE; i++) {
                const float *even = panel + (int64_t)(s * STEP + 2 * i) * NN_PANEL_COLS + cb * TILE;
                __m512i t[PLANES];
                split3(t, _mm512_load_ps(even), _mm512_load_ps(even + NN_PANEL_COLS));
                for (int q = 0; q < PLANES; q++)
                    _mm512_store_si512((__m512i *)(tile + q * TILE_U16 + i * STEP),
                                       _mm512_permutexvar_epi16(interleave, t[q]));
            }
        }
    }
}

/* ---- the tile products ----------------------------------------------------------- */

/* The six term products of one step on the C tiles named, A term tiles
 * from a0/a1 (row blocks), B term tiles from b0/b1 (column blocks). */
#define TERM_PRODUCTS(LOAD_A, DP)                                                           \
    LOAD_A(0);                                                                                \
    _tile_loadd(6, b0, 64);                                                                   \
    _tile_loadd(7, b1, 64);                                                                   \
    DP;                                                                                       \
    _tile_loadd(6, b0 + TILE_U16, 64);                                                        \
    _tile_loadd(7, b1 + TILE_U16, 64);                                                        \
    DP;                                                                                       \
    _tile_loadd(6, b0 + 2 * TILE_U16, 64);                                                    \
    _tile_loadd(7, b1 + 2 * TILE_U16, 64);                                                    \
    DP;                                                                                       \
    LOAD_A(1);                                                                                \
    _tile_loadd(6, b0, 64);                                                                   \
    _tile_loadd(7, b1, 64);                                                                   \
    DP;                                                                                       \
    _tile_loadd(6, b0 + TILE_U16, 64);                                                        \
    _tile_loadd(7, b1 + TILE_U16, 64);                                                        \
    DP;                                                                                       \
    LOAD_A(2);                                                                                \
    _tile_loadd(6, b0, 64);                                                                   \
    _tile_loadd(7, b1, 64);                                                                   \
    DP

/* A C block of 16 or 32 rows (two_rows) by 32 columns over `steps` steps
 * into tiles 0-1 (rows 0-15) and 2-3 (rows 16-31); block_store then writes
 * them to a 32 x 32 float buffer. The caller puts work between the two that
 * does not wait for the products (the previous block's store). */
TARGET static void block_products(const uint16_t *a, const uint16_t *b, int steps, int two_rows)
{
    const int64_t stride = (int64_t)steps * PLANES * TILE_U16; /* to the next row / column block */
    __asm__ volatile("" ::: "memory"); /* the packs are written: tile loads are asm */
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    /* the block height is tested once, outside the loop over steps */
#define STEP_OPERANDS                                                                         \
    const uint16_t *a0 = a + (int64_t)s * PLANES * TILE_U16;                                  \
    const uint16_t *b0 = b + (int64_t)s * PLANES * TILE_U16, *b1 = b0 + stride
#define LOAD_A2(q)                                                                            \
    _tile_loadd(4, a0 + (q) * TILE_U16, 64);                                                  \
    _tile_loadd(5, a0 + stride + (q) * TILE_U16, 64)
#define DP2                                                                                   \
    _tile_dpbf16ps(0, 4, 6);                                                                  \
    _tile_dpbf16ps(1, 4, 7);                                                                  \
    _tile_dpbf16ps(2, 5, 6);                                                                  \
    _tile_dpbf16ps(3, 5, 7)
#define LOAD_A1(q) _tile_loadd(4, a0 + (q) * TILE_U16, 64)
#define DP1                                                                                   \
    _tile_dpbf16ps(0, 4, 6);                                                                  \
    _tile_dpbf16ps(1, 4, 7)
    if (two_rows) {
        for (int s = 0; s < steps; s++) {
            STEP_OPERANDS;
            TERM_PRODUCTS(LOAD_A2, DP2);
        }
    } else {
        for (int s = 0; s < steps; s++) {
            STEP_OPERANDS;
            TERM_PRODUCTS(LOAD_A1, DP1);
        }
    }
#undef STEP_OPERANDS
#undef LOAD_A2
#undef DP2
#undef LOAD_A1
#undef DP1
}

TARGET static void block_store(float *cbuf, int two_rows)
{
    _tile_stored(0, cbuf, 128);
    _tile_stored(1, cbuf + TILE, 128);
    if (two_rows) {
        _tile_stored(2, cbuf + TILE * 32, 128);
        _tile_stored(3, cbuf + TILE * 32 + TILE, 128);
    }
}
#undef TERM_PRODUCTS

/* A C block (mr x nr, both <= 32) waiting in cbuf to be stored into C by
 * nn_store_c_row, the AVX-512 kernel's store. */
typedef struct {
    const float *cbuf; /* NULL: nothing pending */
    float *c;
    int mr, nr, first;
    const float *bias;
} pending_block;

TARGET static void store_block(const pending_block *pb, int64_t ldc, float alpha, float beta)
{
    if (!pb->cbuf) return;
    for (int r = 0; r < pb->mr; r++)
        nn_store_c_row(pb->c + r * ldc, _mm512_load_ps(pb->cbuf + r * 32),
                       _mm512_load_ps(pb->cbuf + r * 32 + 16), pb->nr, pb->first, alpha, beta,
                       pb->bias ? pb->bias + r : NULL);
}

/* ---- the blocked product ------------------------------------------------------------ */

TARGET static void gemm_core(int trans_a, int m, int n, int k, float alpha, const float *a,
                             int64_t lda, const nn_b_source *bs, float beta, const float *bias,
                             float *c, int64_t ldc, float *pack)
{
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0f) {
        nn_gemm_no_products(m, n, beta, bias, c, ldc);
        return;
    }
    uint16_t *bp = (uint16_t *)pack;                           /* B's planes */
    uint16_t *ap = bp + (size_t)PLANES * KC * NC;              /* A's planes */
    float *panels = (float *)(ap + (size_t)PLANES * MC * KC);  /* (NC / 32) (KC, 32) */
    float *cbufs = panels + (size_t)KC * NC;                   /* (2) (32, 32) */
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = TILE;
    }
    _tile_loadconfig(&cfg);
    pending_block pending = {NULL, NULL, 0, 0, 0, NULL};
    int flip = 0;
    for (int j0 = 0; j0 < n; j0 += NC) {
        int nc = n - j0 < NC ? n - j0 : NC;
        for (int p0 = 0; p0 < k; p0 += KC) {
            int kc = k - p0 < KC ? k - p0 : KC, steps = (kc + STEP - 1) / STEP;
            int64_t col_block = (int64_t)steps * PLANES * TILE_U16; /* B tiles per 16 columns */
            /* panels of kc rows, read as steps * 32 rows: zeros past kc */
            int64_t panel_len = (int64_t)steps * STEP * NN_PANEL_COLS;
            for (int jq = 0; jq < nc; jq += PACK_COLS)
                nn_pack_b_avx512(panels + jq / NN_PANEL_COLS * panel_len, bs, p0, kc, j0 + jq,
                                 nc - jq < PACK_COLS ? nc - jq : PACK_COLS, panel_len);
            for (int jp = 0; jp < nc; jp += NN_PANEL_COLS)
                split_b_panel(bp + (jp / TILE) * col_block, panels + jp / NN_PANEL_COLS * panel_len,
                              steps);
            for (int i0 = 0; i0 < m; i0 += MC) {
                int mc = m - i0 < MC ? m - i0 : MC;
                /* the pending store reads C, not the packs: no need to flush it */
                pack_a(ap, a, lda, trans_a, i0, mc, p0, kc);
                for (int jp = 0; jp < nc; jp += 2 * TILE) {
                    int nr = nc - jp < 2 * TILE ? nc - jp : 2 * TILE;
                    const uint16_t *bt = bp + (jp / TILE) * col_block;
                    for (int ip = 0; ip < mc; ip += 2 * TILE) {
                        int mr = mc - ip < 2 * TILE ? mc - ip : 2 * TILE;
                        const uint16_t *at = ap + (ip / TILE) * col_block;
                        float *cbuf = cbufs + flip * (2 * TILE) * (2 * TILE);
                        /* The products run on the tile unit while the
                         * previous block is stored into C. */
                        block_products(at, bt, steps, mr > TILE);
                        store_block(&pending, ldc, alpha, beta);
                        block_store(cbuf, mr > TILE);
                        pending = (pending_block){cbuf, c + (int64_t)(i0 + ip) * ldc + j0 + jp, mr,
                                                  nr, p0 == 0, bias ? bias + i0 + ip : NULL};
                        flip ^= 1;
                    }
                }
            }
            /* the next chunk adds onto these C elements */
            store_block(&pending, ldc, alpha, beta);
            pending.cbuf = NULL;
        }
    }
    _tile_release();
}

TARGET static void sgemm_amx(int trans_a, int trans_b, int m, int n, int k, float alpha,
                             const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                             float *c, int64_t ldc, float *pack)
{
    nn_b_source bs = {b, ldb, trans_b, NULL, 0};
    gemm_core(trans_a, m, n, k, alpha, a, lda, &bs, beta, NULL, c, ldc, pack);
}

TARGET static void conv_gemm_amx(float *y, int64_t ldy, const float *w, const float *bias,
                                 const float *x, const nn_conv *p, int64_t q0, int n,
                                 int pointwise, float *pack)
{
    int kdim = p->c_in * p->k_rows * p->k_cols;
    nn_b_source bs = nn_conv_b_source(x, p, q0, pointwise);
    gemm_core(0, p->c_out, n, kdim, 1.0f, w, kdim, &bs, 0.0f, bias, y, ldy, pack);
}

/* ---- availability ------------------------------------------------------------------- */

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int amx_ok;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_probe(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    int tile = (d >> 24) & 1, bf16 = (d >> 22) & 1, avx512 = (b >> 16) & 1, bw = (b >> 30) & 1;
    int dq = (b >> 17) & 1, vl = (b >> 31) & 1;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return;
    int avx512_bf16 = (a >> 5) & 1;
    if (!(tile && bf16 && avx512 && bw && dq && vl && avx512_bf16)) return;
    if (!__builtin_cpu_supports("avx512f")) return; /* the OS saves the AVX-512 state */
    /* The OS must enable the tile state (XCR0 bits 17, 18) and grant it. */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return;
    amx_ok = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

static int have_amx(void)
{
    pthread_once(&amx_once, amx_probe);
    return amx_ok;
}

nn_sgemm_fn nn_sgemm_amx(void) { return have_amx() ? sgemm_amx : NULL; }
nn_conv_gemm_fn nn_conv_gemm_amx(void) { return have_amx() ? conv_gemm_amx : NULL; }

#else
nn_sgemm_fn nn_sgemm_amx(void) { return NULL; }
nn_conv_gemm_fn nn_conv_gemm_amx(void) { return NULL; }
#endif
