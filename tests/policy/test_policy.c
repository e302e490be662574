/* Unit tests of the policy layer (src/policy): resize geometry, pixel scaling, norm stats,
 * policy configs, adapters, prompt cleaning, and the pi0_policy API's error messages on a tiny
 * random model. Run from the repository root (uses tests/policy/data/test_spm.model). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pi0_policy.h"
#include "policy/adapters.h"
#include "policy/image_resize.h"
#include "policy/norm_stats.h"
#include "policy/policy_config.h"
#include "policy/tokenizer.h"
#include "test_util.h"

static char g_dir[256];
static const char *TOKENIZER = "tests/policy/data/test_spm.model";

static const char *path_in(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static void test_resize_geometry(void) {
    int rh, rw, top, left;
    CHECK(pi0_resize_with_pad_geometry(480, 640, 224, 224, &rh, &rw, &top, &left) == PI0_OK && rh == 168 && rw == 224 &&
              top == 28 && left == 0,
          "480x640 -> %d %d %d %d", rh, rw, top, left);
    CHECK(pi0_resize_with_pad_geometry(300, 100, 224, 224, &rh, &rw, &top, &left) == PI0_OK && rh == 224 && rw == 74 &&
              top == 0 && left == 75,
          "300x100 -> %d %d %d %d", rh, rw, top, left);
    CHECK(pi0_resize_with_pad_geometry(224, 224, 224, 224, &rh, &rw, &top, &left) == PI0_OK && rh == 224 && rw == 224,
          "no-op");
    CHECK(pi0_resize_with_pad_geometry(1, 3, 224, 224, &rh, &rw, &top, &left) == PI0_OK && rh == 74 && rw == 224 &&
              top == 75,
          "1x3 -> %d %d %d", rh, rw, top);
    CHECK_ERR(pi0_resize_with_pad_geometry(1, 1000, 224, 224, &rh, &rw, &top, &left), PI0_ERR_INVALID_ARG,
              "too elongated");
    CHECK_ERR(pi0_resize_with_pad_geometry(0, 10, 224, 224, &rh, &rw, &top, &left), PI0_ERR_INVALID_ARG, "empty size");
    CHECK(pi0_resize_vertical_first(300, 100, 224, 74, PI0_RESIZE_PILLOW13) == 1 &&
              pi0_resize_vertical_first(300, 100, 224, 74, PI0_RESIZE_PILLOW11) == 0,
          "pass order rule");

    /* constant images stay constant; a 2x2 -> 1x1 box average; identity copy */
    uint8_t src[6 * 4 * 3], dst[224 * 224 * 3];
    memset(src, 77, sizeof src);
    CHECK(pi0_resize_bilinear_u8(src, 6, 4, 3, dst, 11, 9) == PI0_OK, "resize");
    int ok = 1;
    for (int i = 0; i < 11 * 9 * 3; i++) ok &= dst[i] == 77;
    CHECK(ok, "constant image not preserved");
    uint8_t four[4] = {0, 100, 200, 255}, one;
    CHECK(pi0_resize_bilinear_u8(four, 2, 2, 1, &one, 1, 1) == PI0_OK && one == 139, "2x2 -> %d (Pillow: 139)", one);
    CHECK(pi0_resize_with_pad_u8(src, 6, 4, dst, 224, 224) == PI0_OK && dst[0] == 0 && dst[(112 * 224 + 112) * 3] == 77,
          "pad is black, content centred");
    uint8_t px[3] = {0, 128, 255};
    float f[3];
    pi0_image_u8_to_unit(px, 3, f);
    CHECK(f[0] == -1.0f && f[2] == 1.0f && fabsf(f[1] - (128.f / 255.f * 2.f - 1.f)) == 0.f, "u8 -> unit %g %g %g",
          (double)f[0], (double)f[1], (double)f[2]);
}

static void test_norm_stats(void) {
    pi0_norm_stats s;
    const char *good = "{\"norm_stats\": {\"state\": {\"mean\": [1, 2, 3], \"std\": [2, 4, 0.5], \"q01\": [0, 0, 0],"
                       " \"q99\": [2, 4, 6]}, \"actions\": {\"mean\": [0.5, -1], \"std\": [2, 3], \"q01\": null,"
                       " \"q99\": null}}}";
    CHECK(pi0_norm_stats_parse(good, "t", &s) == PI0_OK && s.state.n == 3 && s.actions.n == 2 && s.state.q01 &&
              !s.actions.q01,
          "parse: %s", pi0_last_error());
    double x[3] = {3, 2, 4};
    CHECK(pi0_normalize(&s.state, 0, x, 3, "state") == PI0_OK && x[0] == (3 - 1) / (2 + 1e-6) && x[1] == 0.0 &&
              x[2] == (4 - 3) / (0.5 + 1e-6),
          "z-score normalize");
    double q[2] = {1, 3};
    CHECK(pi0_normalize(&s.state, 1, q, 2, "state") == PI0_OK && q[0] == (1 - 0) / (2 - 0 + 1e-6) * 2.0 - 1.0,
          "quantile normalize");
    double big[4] = {0};
    CHECK_ERR(pi0_normalize(&s.state, 0, big, 4, "state"), PI0_ERR_INVALID_ARG, "state has 4 values but its norm stats have only 3");
    CHECK_ERR(pi0_normalize(&s.actions, 1, big, 2, "actions"), PI0_ERR_INVALID_ARG, "needs q01/q99");
    double a[2 * 4] = {1, 1, 1, 1, -1, 0, 2, 0};
    CHECK(pi0_unnormalize(&s.actions, 0, a, 2, 4, "actions") == PI0_OK && a[0] == 1 * (2 + 1e-6) + 0.5 &&
              a[1] == 1 * (3 + 1e-6) - 1 && a[2] == 1 * (1 + 1e-6) && a[6] == 2 * (1 + 1e-6) && a[7] == 0,
          "unnormalize pads with mean 0 / std 1");
    double u[5] = {0, 1, -1, 7, 7};
    CHECK(pi0_unnormalize(&s.state, 1, u, 1, 5, "state") == PI0_OK && u[0] == 0.5 * (2 + 1e-6) && u[3] == 7 && u[4] == 7,
          "quantile unnormalize passes extra dims through");
    double small[2] = {0};
    CHECK_ERR(pi0_unnormalize(&s.state, 0, small, 1, 2, "state"), PI0_ERR_INVALID_ARG, "more than the model's action_dim 2");
    pi0_norm_stats_free(&s);

    CHECK_ERR(pi0_norm_stats_parse("{\"stats\": {}}", "f.json", &s), PI0_ERR_FORMAT, "f.json: no \"norm_stats\" object");
    CHECK_ERR(pi0_norm_stats_parse("{\"norm_stats\": {\"state\": {\"mean\": [1]}, \"actions\": {\"mean\": [1], \"std\": [1]}}}", "f",
                                   &s),
              PI0_ERR_FORMAT, "norm_stats.state.std is missing");
    CHECK_ERR(pi0_norm_stats_parse("{\"norm_stats\": {\"actions\": {\"mean\": [1, 2], \"std\": [1]}}}", "f", &s), PI0_ERR_FORMAT,
              "norm_stats.actions.std has 1 entries, mean has 2");
    CHECK_ERR(pi0_norm_stats_parse("{\"norm_stats\": {\"actions\": {\"mean\": [1, \"x\"], \"std\": [1, 1]}}}", "f", &s),
              PI0_ERR_FORMAT, "norm_stats.actions.mean[1] is not a finite number");
    CHECK_ERR(pi0_norm_stats_parse("{\"norm_stats\": {\"state\": {\"mean\": [1], \"std\": [1]}}}", "f", &s), PI0_ERR_FORMAT,
              "no \"actions\" entry");
    CHECK_ERR(pi0_norm_stats_parse("{\"norm_stats\": {\"actions\": {\"mean\": [1], \"std\": [1], \"q01\": [0]}}}", "f", &s),
              PI0_ERR_FORMAT, "only one of q01 and q99");
    CHECK_ERR(pi0_norm_stats_parse("{norm", "f", &s), PI0_ERR_FORMAT, "invalid JSON");
    CHECK_ERR(pi0_norm_stats_load(path_in("nope.json"), &s), PI0_ERR_IO, "cannot open norm stats");
}

static void test_config(void) {
    pi0_policy_config c;
    CHECK(pi0_policy_config_parse("{\"adapter\": \"aloha\", \"metadata\": {\"reset_pose\": [0, -1.5, 1.5, 0, 0, 0],"
                                  " \"x\": 1.0, \"s\": \"a b\"}, \"norm_stats\": \"stats/n.json\"}",
                                  "/cfg", NULL, "t", &c) == PI0_OK,
          "aloha: %s", pi0_last_error());
    CHECK(c.adapter == PI0_ADAPTER_ALOHA && c.layout == PI0_LAYOUT_CHW && c.action_dims == 14 && c.adapt_to_pi &&
              !strcmp(c.image_keys[0], "images/cam_high") && c.image_required[0] && !c.image_required[1] &&
              !strcmp(c.state_keys[0], "state") && c.n_ignored == 1 && !strcmp(c.prompt_key, "prompt"),
          "aloha defaults");
    CHECK(!strcmp(c.metadata_json, "{\"reset_pose\":[0,-1.5,1.5,0,0,0],\"x\":1.0,\"s\":\"a b\"}"), "metadata kept as written: %s",
          c.metadata_json);
    char *np = pi0_policy_config_path(&c, c.norm_stats_path, NULL);
    CHECK(np && !strcmp(np, "/cfg/stats/n.json"), "relative path: %s", np ? np : pi0_last_error());
    free(np);
    pi0_policy_config_free(&c);

    CHECK(pi0_policy_config_parse("{\"adapter\": \"droid\", \"action_horizon\": 10, \"norm_stats\": \"${CHECKPOINT}/assets/droid/n.json\","
                                  " \"tokenizer\": \"/abs/t.model\"}",
                                  "/cfg", "ckpt/dir/model.safetensors", "t", &c) == PI0_OK,
          "droid: %s", pi0_last_error());
    CHECK(c.adapter == PI0_ADAPTER_DROID && c.layout == PI0_LAYOUT_AUTO && c.action_dims == 8 && c.action_horizon == 10 &&
              c.n_state_keys == 2 && !strcmp(c.state_keys[1], "observation/gripper_position") && !c.image_keys[2] &&
              c.image_required[1] && !strcmp(c.metadata_json, "{}"),
          "droid defaults");
    np = pi0_policy_config_path(&c, c.norm_stats_path, "ckpt/dir/model.safetensors");
    char *tp = pi0_policy_config_path(&c, c.tokenizer_path, NULL);
    CHECK(np && tp && !strcmp(np, "ckpt/dir/assets/droid/n.json") && !strcmp(tp, "/abs/t.model"), "checkpoint path: %s",
          np ? np : pi0_last_error());
    free(np);
    free(tp);
    CHECK(pi0_policy_config_path(&c, c.norm_stats_path, NULL) == NULL &&
              strstr(pi0_last_error(), "uses ${CHECKPOINT} but no checkpoint was given"),
          "no checkpoint: %s", pi0_last_error());
    pi0_policy_config_free(&c);

    CHECK(pi0_policy_config_parse("{\"adapter\": \"generic\", \"images\": {\"base_0_rgb\": \"cam/a\", \"right_wrist_0_rgb\": \"cam/b\"},"
                                  " \"required_images\": [\"base_0_rgb\"], \"state_keys\": [\"s1\", \"s2\"], \"image_layout\": \"CHW\","
                                  " \"prompt_key\": \"task\", \"default_prompt\": \"go\", \"normalization\": \"quantile\","
                                  " \"delta_action_mask\": [true, false, true], \"action_dims\": 5,"
                                  " \"resize_pass_order\": \"pillow13\", \"_comment\": \"x\"}",
                                  ".", NULL, "t", &c) == PI0_OK,
          "generic: %s", pi0_last_error());
    CHECK(c.image_required[0] && !c.image_required[2] && !strcmp(c.image_keys[2], "cam/b") && !c.image_keys[1] &&
              c.n_state_keys == 2 && c.layout == PI0_LAYOUT_CHW && !strcmp(c.prompt_key, "task") &&
              !strcmp(c.default_prompt, "go") && c.quantile && c.n_delta == 3 && c.delta_mask[2] && !c.delta_mask[1] &&
              c.action_dims == 5 && c.resize_pillow13,
          "generic fields");
    pi0_policy_config_free(&c);

    setenv("OPENPI_DATA_HOME", "/data/openpi", 1);
    char *r = pi0_policy_resolve_path("${OPENPI_DATA_HOME}/big_vision/t.model", "/cfg", NULL, "t");
    CHECK(r && !strcmp(r, "/data/openpi/big_vision/t.model"), "OPENPI_DATA_HOME: %s", r ? r : "(null)");
    free(r);
    unsetenv("OPENPI_DATA_HOME");
    setenv("HOME", "/home/u", 1);
    r = pi0_policy_resolve_path("${OPENPI_DATA_HOME}/t.model", "/cfg", NULL, "t");
    CHECK(r && !strcmp(r, "/home/u/.cache/openpi/t.model"), "default cache: %s", r ? r : "(null)");
    free(r);
    r = pi0_policy_resolve_path("~/x", "/cfg", NULL, "t");
    CHECK(r && !strcmp(r, "/home/u/x"), "~: %s", r ? r : "(null)");
    free(r);
    CHECK(pi0_policy_resolve_path("${NOPE}/x", "/cfg", NULL, "t") == NULL && strstr(pi0_last_error(), "unknown variable ${NOPE}"),
          "unknown variable: %s", pi0_last_error());
    CHECK(pi0_policy_resolve_path("${CHECKPOINT}/x", "/cfg", NULL, "t") == NULL &&
              strstr(pi0_last_error(), "uses ${CHECKPOINT} but no checkpoint was given"),
          "no checkpoint: %s", pi0_last_error());

    CHECK_ERR(pi0_policy_config_parse("{\"adapter\": \"aloha\", \"imagess\": {}}", ".", NULL, "c.json", &c), PI0_ERR_FORMAT,
              "c.json: unknown key \"imagess\" in the policy config");
    CHECK_ERR(pi0_policy_config_parse("{\"adapter\": \"franka\"}", ".", NULL, "c", &c), PI0_ERR_FORMAT,
              "\"adapter\" must be one of");
    CHECK_ERR(pi0_policy_config_parse("{\"images\": {\"top\": \"x\"}}", ".", NULL, "c", &c), PI0_ERR_FORMAT,
              "unknown camera slot \"top\"");
    CHECK_ERR(pi0_policy_config_parse("{\"adapter\": \"generic\"}", ".", NULL, "c", &c), PI0_ERR_FORMAT, "no camera");
    CHECK_ERR(pi0_policy_config_parse("{\"adapter\": \"droid\", \"adapt_to_pi\": false}", ".", NULL, "c", &c), PI0_ERR_FORMAT,
              "only applies to the aloha adapter");
    CHECK_ERR(pi0_policy_config_parse("{\"adapter\": \"droid\", \"action_dims\": 1.5}", ".", NULL, "c", &c), PI0_ERR_FORMAT,
              "\"action_dims\" must be an integer");
    CHECK_ERR(pi0_policy_config_parse("[1]", ".", NULL, "c", &c), PI0_ERR_FORMAT, "must be a JSON object");
    CHECK_ERR(pi0_policy_config_parse("{\"adapter\": ", ".", NULL, "c", &c), PI0_ERR_FORMAT, "invalid JSON");
    CHECK_ERR(pi0_policy_config_load(path_in("missing.json"), NULL, &c), PI0_ERR_IO, "cannot open policy config");
}

static void test_adapters_and_prompt(void) {
    /* values from the NumPy formulas of SPEC §10.5 */
    CHECK(fabs(pi0_aloha_gripper_to_angular(0.5) - -0.14005592) < 1e-8, "to_angular(0.5) = %.9f",
          pi0_aloha_gripper_to_angular(0.5));
    CHECK(fabs(pi0_aloha_gripper_to_angular(1.0) - 0.9456528) < 1e-7, "to_angular(1)");
    CHECK(fabs(pi0_aloha_gripper_from_angular(0.5) - 0.79008664) < 1e-8, "from_angular(0.5)");

    char out[64];
    CHECK(pi0_prompt_clean(" \t_pick_up\nthe cube_ \n", 22, out) == 18 && !strcmp(out, " pick up the cube "),
          "clean: '%s'", out);
    const char *u = "\xe3\x80\x80x\xc2\xa0"; /* U+3000 x U+00A0 */
    CHECK(pi0_prompt_clean(u, strlen(u), out) == 1 && !strcmp(out, "x"), "unicode strip: '%s'", out);
    const char *zw = "\xe2\x80\x8bx"; /* U+200B is not a Python space */
    CHECK(pi0_prompt_clean(zw, strlen(zw), out) == 4, "zero width kept");
    CHECK(pi0_prompt_clean(" \n ", 3, out) == 0 && out[0] == 0, "all spaces");
    size_t bad;
    CHECK(pi0_utf8_valid("ok \xc3\xa9", 5, &bad), "utf8 ok");
    CHECK(!pi0_utf8_valid("ab\xc3", 3, &bad) && bad == 2, "truncated");
    CHECK(!pi0_utf8_valid("\xed\xa0\x80", 3, &bad) && bad == 0, "surrogate");
    CHECK(!pi0_utf8_valid("\xc0\xaf", 2, &bad) && bad == 0, "overlong");
    CHECK(!pi0_utf8_valid("a\xff", 2, &bad) && bad == 1, "0xff");

    pi0_tokenizer *t;
    CHECK(pi0_tokenizer_load(TOKENIZER, &t) == PI0_OK, "load tokenizer: %s", pi0_last_error());
    if (t) {
        int32_t tok[8];
        uint8_t mask[8];
        int n = 0;
        CHECK(pi0_tokenize_prompt(t, "pick up the red cube", 20, 8, tok, mask, &n) == PI0_OK && n == 7 && tok[0] == 2 &&
                  tok[6] == 4 && tok[7] == 0 && mask[6] == 1 && mask[7] == 0,
              "tokenize: n %d", n);
        CHECK(pi0_tokenize_prompt(t, "pick up the red cube", 20, 4, tok, mask, &n) == PI0_OK && n == 7 && mask[3] == 1 &&
                  tok[3] == 290,
              "truncate");
        CHECK_ERR(pi0_tokenize_prompt(t, "a\xff", 2, 8, tok, mask, &n), PI0_ERR_INVALID_ARG,
                  "prompt is not valid UTF-8 (bad byte 0xff at offset 1)");
        pi0_tokenizer_free(t);
    }
    CHECK_ERR(pi0_tokenizer_load(path_in("nope.model"), &t), PI0_ERR_IO, "tokenizer: cannot open");
    write_text(path_in("garbage.model"), "not a model");
    CHECK_ERR(pi0_tokenizer_load(path_in("garbage.model"), &t), PI0_ERR_FORMAT, "is not a SentencePiece model");
}

/* ---- the policy API on a tiny random model ---------------------------------------- */

static const char *STATS =
    "{\"norm_stats\": {\"state\": {\"mean\": [0.1, -0.2, 0.3, 0, 0, 0, 0.5, 0.1, -0.2, 0.3, 0, 0, 0, 0.5],"
    " \"std\": [1, 2, 1, 1, 1, 1, 0.5, 1, 2, 1, 1, 1, 1, 0.5]},"
    " \"actions\": {\"mean\": [0, 0, 0, 0, 0, 0, 0.5, 0, 0, 0, 0, 0, 0, 0.5], \"std\": [1, 1, 1, 1, 1, 1, 0.2, 1, 1, 1, 1, 1, 1, 0.2]}}}";

static pi0_policy *make_policy(const char *config_json, const char *default_prompt) {
    write_text(path_in("stats.json"), STATS);
    write_text(path_in("policy.json"), config_json);
    pi0_policy_params pp = pi0_policy_default_params();
    pp.policy_config = path_in("policy.json");
    pp.random_config = "tiny";
    pp.random_seed = 7;
    pp.tokenizer = TOKENIZER;
    pp.default_prompt = default_prompt;
    pp.model.backend = PI0_BACKEND_CPU;
    pp.session.num_steps = 2;
    pp.session.action_horizon = 4;
    pi0_policy *p = NULL;
    pi0_status st = pi0_policy_create(&pp, &p);
    CHECK(st == PI0_OK, "create: %s", pi0_last_error());
    return p;
}

static void test_policy_api(void) {
    pi0_policy *p = make_policy("{\"adapter\": \"aloha\", \"norm_stats\": \"stats.json\","
                                " \"delta_action_mask\": [true, true, true, true, true, true, false, true, true, true, true, true, true, false],"
                                " \"metadata\": {\"reset_pose\": [0, -1.5, 1.5, 0, 0, 0]}}",
                                NULL);
    if (!p) return;
    CHECK(!strcmp(pi0_policy_metadata_json(p), "{\"reset_pose\":[0,-1.5,1.5,0,0,0]}"), "metadata %s",
          pi0_policy_metadata_json(p));
    int H, D;
    pi0_policy_shape(p, &H, &D);
    CHECK(H == 4 && D == 14, "shape %d %d", H, D);

    static uint8_t cam[3 * 60 * 80];
    for (size_t i = 0; i < sizeof cam; i++) cam[i] = (uint8_t)(i * 7);
    static float camf[3 * 30 * 40];
    for (size_t i = 0; i < sizeof camf / sizeof camf[0]; i++) camf[i] = (float)(i % 100) / 100.f;
    double state[14] = {0.1, -0.5, 0.4, 0, 0.2, 0.3, 0.6, -0.1, 0.5, -0.4, 0, -0.2, 0.1, 0.3};
    pi0_obs_item items[6] = {
        {"images/cam_high", PI0_VALUE_ARRAY, PI0_ELEM_U8, 3, {3, 60, 80}, cam, NULL},
        {"images/cam_left_wrist", PI0_VALUE_ARRAY, PI0_ELEM_F32, 3, {3, 30, 40}, camf, NULL},
        {"images/cam_low", PI0_VALUE_ARRAY, PI0_ELEM_U8, 3, {3, 60, 80}, cam, NULL},
        {"state", PI0_VALUE_ARRAY, PI0_ELEM_F64, 1, {14}, state, NULL},
        {"prompt", PI0_VALUE_STRING, 0, 0, {0}, NULL, "fold the towel"},
        {"extra/ignored", PI0_VALUE_ARRAY, PI0_ELEM_I64, 0, {0}, &(int64_t){3}, NULL},
    };
    pi0_policy_result res;
    CHECK(pi0_policy_infer(p, items, 6, NULL, 1, &res) == PI0_OK, "infer: %s", pi0_last_error());
    CHECK(res.horizon == 4 && res.action_dims == 14 && res.actions && isfinite(res.actions[0]) && res.total_ms >= res.infer_ms,
          "result");
    pi0_observation o;
    CHECK(pi0_policy_prepare(p, items, 6, &o) == PI0_OK && o.image_mask[0] && o.image_mask[1] && !o.image_mask[2] &&
              o.n_tokens == 48 && o.tokens[0] == 2 && o.images[2][0] == -1.0f && o.state[14] == 0.f,
          "prepare");
    /* same observation, same seed -> same actions */
    double first = res.actions[5];
    CHECK(pi0_policy_infer(p, items, 6, NULL, 1, &res) == PI0_OK && res.actions[5] == first, "deterministic");

    /* bad inputs: each error names the key and what was expected */
    pi0_obs_item bad[6];
#define MUTATE(i, field, value) (memcpy(bad, items, sizeof items), bad[i].field = value, bad)
    CHECK_ERR(pi0_policy_infer(p, MUTATE(0, dtype, PI0_ELEM_I32), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "image 'images/cam_high': expected a uint8 (or float in [0, 1]) array of shape [3, H, W] (CHW), got int32 [3, 60, 80]");
    CHECK_ERR(pi0_policy_infer(p, MUTATE(0, ndim, 2), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "image 'images/cam_high': expected a uint8 (or float in [0, 1]) array of shape [3, H, W] (CHW), got uint8 [3, 60]");
    int64_t hwc[4] = {60, 80, 3, 0};
    memcpy(bad, items, sizeof items);
    memcpy(bad[0].shape, hwc, sizeof hwc);
    CHECK_ERR(pi0_policy_infer(p, bad, 6, NULL, 1, &res), PI0_ERR_INVALID_ARG, "got uint8 [60, 80, 3]");
    CHECK_ERR(pi0_policy_infer(p, MUTATE(0, key, "images/cam_top"), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "unknown camera 'cam_top' (key 'images/cam_top'): expected cameras are cam_high, cam_left_wrist, "
              "cam_right_wrist, cam_low");
    CHECK_ERR(pi0_policy_infer(p, items + 1, 5, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "missing key 'images/cam_high' (camera base_0_rgb: expected a uint8 image of shape [3, H, W])");
    double nan_state[14];
    memcpy(nan_state, state, sizeof state);
    nan_state[3] = NAN;
    CHECK_ERR(pi0_policy_infer(p, MUTATE(3, data, nan_state), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "state 'state' has a non-finite value (nan) at index 3");
    CHECK_ERR(pi0_policy_infer(p, MUTATE(3, shape[0], 7), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "the ALOHA adapter expects 14 values");
    CHECK_ERR(pi0_policy_infer(p, MUTATE(3, ndim, 2), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "state 'state': expected a 1-D numeric array (or a scalar), got float64 [14, 0]");
    CHECK_ERR(pi0_policy_infer(p, MUTATE(3, key, "qpos"), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "missing key 'state' (expected the robot state");
    CHECK_ERR(pi0_policy_infer(p, MUTATE(4, key, "task"), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "missing key 'prompt': a prompt is required (a UTF-8 string) and the policy has no default prompt");
    CHECK_ERR(pi0_policy_infer(p, MUTATE(4, str, "bad \xff"), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "prompt 'prompt': prompt is not valid UTF-8 (bad byte 0xff at offset 4)");
    memcpy(bad, items, sizeof items);
    bad[4] = (pi0_obs_item){"prompt", PI0_VALUE_ARRAY, PI0_ELEM_F32, 1, {2}, camf, NULL};
    CHECK_ERR(pi0_policy_infer(p, bad, 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "prompt 'prompt': expected a string (UTF-8 text), got an array");
    CHECK_ERR(pi0_policy_infer(p, MUTATE(5, key, "state"), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "observation key 'state' appears twice");
    float nanimg[3 * 30 * 40];
    memcpy(nanimg, camf, sizeof nanimg);
    nanimg[17] = INFINITY;
    CHECK_ERR(pi0_policy_infer(p, MUTATE(1, data, nanimg), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "image 'images/cam_left_wrist' has a non-finite value (inf) at flat index 17");
    uint8_t thin[3 * 1 * 1000] = {0};
    int64_t thin_shape[4] = {3, 1, 1000, 0};
    memcpy(bad, items, sizeof items);
    bad[0].data = thin;
    memcpy(bad[0].shape, thin_shape, sizeof thin_shape);
    CHECK_ERR(pi0_policy_infer(p, bad, 6, NULL, 1, &res), PI0_ERR_INVALID_ARG, "image 'images/cam_high': image of 1x1000");
    CHECK_ERR(pi0_policy_infer(p, MUTATE(0, kind, (pi0_value_kind)9), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "observation key 'images/cam_high': unknown value kind 9");
    CHECK_ERR(pi0_policy_infer(p, MUTATE(0, ndim, 5), 6, NULL, 1, &res), PI0_ERR_INVALID_ARG,
              "observation key 'images/cam_high' has 5 dimensions (at most 4)");
    pi0_policy_free(p);

    /* default prompt, DROID layout (HWC or CHW), scalar gripper */
    p = make_policy("{\"adapter\": \"droid\", \"norm_stats\": \"stats.json\"}", "do something");
    if (p) {
        static uint8_t ext[50 * 70 * 3];
        float joints[7] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f};
        double grip = 0.5;
        pi0_obs_item d[4] = {
            {"observation/exterior_image_1_left", PI0_VALUE_ARRAY, PI0_ELEM_U8, 3, {50, 70, 3}, ext, NULL},
            {"observation/wrist_image_left", PI0_VALUE_ARRAY, PI0_ELEM_U8, 3, {3, 50, 70}, ext, NULL},
            {"observation/joint_position", PI0_VALUE_ARRAY, PI0_ELEM_F32, 1, {7}, joints, NULL},
            {"observation/gripper_position", PI0_VALUE_ARRAY, PI0_ELEM_F64, 0, {0}, &grip, NULL},
        };
        CHECK(pi0_policy_infer(p, d, 4, NULL, 3, &res) == PI0_OK && res.action_dims == 8, "droid infer: %s",
              pi0_last_error());
        CHECK_ERR(pi0_policy_infer(p, d, 3, NULL, 3, &res), PI0_ERR_INVALID_ARG,
                  "missing key 'observation/gripper_position' (expected the robot state: a 1-D numeric array, "
                  "concatenated with the other state keys)");
        CHECK_ERR(pi0_policy_infer(p, d + 1, 3, NULL, 3, &res), PI0_ERR_INVALID_ARG,
                  "missing key 'observation/exterior_image_1_left'");
        pi0_policy_free(p);
    }

    /* creation errors */
    pi0_policy_params pp = pi0_policy_default_params();
    pi0_policy *q = NULL;
    CHECK_ERR(pi0_policy_create(&pp, &q), PI0_ERR_INVALID_ARG, "no policy config given");
    write_text(path_in("p2.json"), "{\"adapter\": \"libero\", \"norm_stats\": \"missing_stats.json\"}");
    pp.policy_config = path_in("p2.json");
    pp.tokenizer = TOKENIZER;
    CHECK_ERR(pi0_policy_create(&pp, &q), PI0_ERR_IO, "cannot open norm stats");
    write_text(path_in("p3.json"), "{\"adapter\": \"libero\"}");
    pp.policy_config = path_in("p3.json");
    pp.tokenizer = NULL;
    CHECK_ERR(pi0_policy_create(&pp, &q), PI0_ERR_INVALID_ARG, "no tokenizer: set \"tokenizer\" in the policy config");
    write_text(path_in("p4.json"), "{\"adapter\": \"aloha\", \"action_dims\": 10}");
    pp.policy_config = path_in("p4.json");
    pp.tokenizer = TOKENIZER;
    pp.model.backend = PI0_BACKEND_CPU;
    CHECK_ERR(pi0_policy_create(&pp, &q), PI0_ERR_INVALID_ARG, "the aloha adapter returns 14 action dims, not 10");
    CHECK(q == NULL, "no policy on failure");
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/pi0_test_policy_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_resize_geometry();
    test_norm_stats();
    test_config();
    test_adapters_and_prompt();
    test_policy_api();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", g_dir);
    return test_summary("test_policy");
}
