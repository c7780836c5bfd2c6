#include "common/checkpoint/checkpoint.h"

#include <filesystem>

#include "common/checkpoint/libtorch_io.h"
#include "common/checkpoint/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/paths.h"

namespace weightcast {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Fixture(const std::string& name) {
  return FixtureDir() + "/" + name;
}

std::vector<std::string> Names(const Model& model) {
  std::vector<std::string> names;
  for (const Tensor& t : model.tensors) names.push_back(t.name);
  return names;
}

const Tensor& Find(const Model& model, const std::string& name) {
  for (const Tensor& t : model.tensors) {
    if (t.name == name) return t;
  }
  ADD_FAILURE() << "no tensor " << name;
  static const Tensor kNone;
  return kNone;
}

std::string ErrorOf(const std::string& fixture) {
  auto model = ReadCheckpoint(Fixture(fixture));
  EXPECT_FALSE(model.ok()) << fixture;
  EXPECT_THAT(std::string(model.status().message()), HasSubstr(fixture));
  return std::string(model.status().message());
}

TEST(TorchSave, ReadsAnOrderedDictStateDict) {
  CheckpointFormat format;
  auto model = ReadCheckpoint(Fixture("mlp.pt"), &format);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(format, CheckpointFormat::kTorchSave);
  EXPECT_THAT(Names(*model),
              ElementsAre("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"));
  EXPECT_EQ(model->tensors[0].shape, (std::vector<int64_t>{128, 784}));
}

TEST(TorchSave, ReadsTheSameWeightsAsSafetensors) {
  auto pt = ReadCheckpoint(Fixture("cnn_bn.pt"));
  auto st = ReadCheckpoint(Fixture("mixed.safetensors"));
  ASSERT_TRUE(pt.ok()) << pt.status();
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(Names(*pt), Names(*st));
  for (size_t i = 0; i < pt->tensors.size(); ++i) {
    EXPECT_EQ(pt->tensors[i].data, st->tensors[i].data) << pt->tensors[i].name;
    EXPECT_EQ(pt->tensors[i].dtype, st->tensors[i].dtype)
        << pt->tensors[i].name;
  }
  EXPECT_EQ(Find(*pt, "bn.num_batches_tracked").dtype, DType::kInt64);
}

TEST(TorchSave, TiedWeightsShareOneStorage) {
  auto model = ReadCheckpoint(Fixture("tied.pt"));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_THAT(Names(*model), ElementsAre("encoder.weight", "decoder.weight"));
  EXPECT_EQ(model->tensors[0].data, model->tensors[1].data);
}

TEST(TorchSave, FindsTheModelInsideATrainingDict) {
  for (const char* fixture : {"training.pt", "wrapped.pt"}) {
    auto model = ReadCheckpoint(Fixture(fixture));
    ASSERT_TRUE(model.ok()) << fixture << ": " << model.status();
    EXPECT_THAT(Names(*model),
                ElementsAre("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"))
        << fixture;
  }
  auto one = ReadCheckpoint(Fixture("one_key.pt"));
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_THAT(Names(*one), ElementsAre("only.weight"));
}

TEST(TorchSave, ReadsEveryDtype) {
  auto model = ReadCheckpoint(Fixture("dtypes.pt"));
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<float> f32 = ToFloat32(Find(*model, "f32")).value();
  const std::vector<float> f64 = ToFloat32(Find(*model, "f64")).value();
  const std::vector<float> f16 = ToFloat32(Find(*model, "f16")).value();
  const std::vector<float> bf16 = ToFloat32(Find(*model, "bf16")).value();
  for (size_t i = 0; i < f32.size(); ++i) {
    EXPECT_FLOAT_EQ(f64[i], f32[i]);
    EXPECT_NEAR(f16[i], f32[i], 2e-3);
    EXPECT_NEAR(bf16[i], f32[i], 2e-2);
  }
  EXPECT_EQ(Find(*model, "i8").dtype, DType::kInt8);
  EXPECT_EQ(Find(*model, "u8").dtype, DType::kUInt8);
  EXPECT_EQ(Find(*model, "i16").dtype, DType::kInt16);
  EXPECT_EQ(Find(*model, "i32").dtype, DType::kInt32);
  EXPECT_EQ(Find(*model, "b").dtype, DType::kBool);
  const std::vector<float> i64 = ToFloat32(Find(*model, "i64")).value();
  EXPECT_EQ(i64[47], 47.0f);
}

TEST(TorchSave, ViewsAreGatheredFromTheirStorage) {
  auto model = ReadCheckpoint(Fixture("views.pt"));
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<float> base =
      ToFloat32(Find(*model, "base")).value();  // 6 x 8
  const std::vector<float> rows =
      ToFloat32(Find(*model, "rows")).value();  // base[2:5]
  const std::vector<float> t = ToFloat32(Find(*model, "transposed")).value();
  const std::vector<float> strided =
      ToFloat32(Find(*model, "strided")).value();  // base[:, ::2]
  ASSERT_EQ(rows.size(), 24u);
  EXPECT_EQ(rows[0], base[16]);
  EXPECT_EQ(Find(*model, "transposed").shape, (std::vector<int64_t>{8, 6}));
  for (int r = 0; r < 8; ++r) {
    for (int c = 0; c < 6; ++c) EXPECT_EQ(t[r * 6 + c], base[c * 8 + r]);
  }
  for (int r = 0; r < 6; ++r) {
    for (int c = 0; c < 4; ++c)
      EXPECT_EQ(strided[r * 4 + c], base[r * 8 + 2 * c]);
  }
  EXPECT_EQ(ToFloat32(Find(*model, "element")).value(),
            std::vector<float>{base[11]});
}

TEST(TorchSave, ZeroSizeTensorsAreFine) {
  auto model = ReadCheckpoint(Fixture("zero_size.pt"));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(Find(*model, "empty").shape, (std::vector<int64_t>{0, 4}));
  EXPECT_TRUE(Find(*model, "empty").data.empty());
}

TEST(TorchScript, ReadsParametersAndBuffers) {
  CheckpointFormat format;
  auto model = ReadCheckpoint(Fixture("script.pt"), &format);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(format, CheckpointFormat::kTorchScript);
  auto reference = ReadCheckpoint(Fixture("cnn_bn.pt"));
  ASSERT_TRUE(reference.ok());
  for (const Tensor& t : reference->tensors)
    EXPECT_EQ(Find(*model, t.name).data, t.data) << t.name;
}

TEST(TorchScript, DamagedCodeIsInvalidArgumentSayingWhyNotACrash) {
  // The TorchScript compiler throws std::runtime_error on the first,
  // ErrorReport on the second: neither is a c10::Error.
  const std::pair<std::string, std::string> damaged[] = {
      {"script_bad_syntax.pt", "expected"},
      {"script_unknown_op.pt", "aten::no_such_op"}};
  for (const auto& [fixture, why] : damaged) {
    auto model = ReadCheckpoint(Fixture(fixture));
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument)
        << fixture;
    EXPECT_THAT(
        std::string(model.status().message()),
        AllOf(HasSubstr(fixture),
              HasSubstr("not a loadable TorchScript module"), HasSubstr(why)));
  }
}

TEST(TorchScript, StorageLargerThanItsRecordIsInvalidArgument) {
  // libtorch loads it without complaint; copying fc1.weight's 5.5 MB would
  // read 2.7 MB past the record.
  auto model = ReadCheckpoint(Fixture("script_short_storage.pt"));
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()),
              AllOf(HasSubstr("script_short_storage.pt"),
                    HasSubstr("record data/7 holds 2768896 bytes"),
                    HasSubstr("1384448 float32 elements")));
}

TEST(TorchScript, TensorReachingPastItsStorageIsInvalidArgument) {
  // The storage fits its record, but the tensor's 10 elements reach past the
  // storage's 5.
  auto model = ReadCheckpoint(Fixture("script_view_past_storage.pt"));
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()),
              AllOf(HasSubstr("script_view_past_storage.pt"),
                    HasSubstr("tensor 'fc2.bias' [10] reaches past its stored "
                              "data (40 bytes needed, 20 stored)")));
}

TEST(TorchScript,
     DebugPickleClaimingAHugeStringIsRefusedBeforeLibtorchAllocatesIt) {
  auto model = ReadCheckpoint(Fixture("script_huge_debug_string.pt"));
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()),
              AllOf(HasSubstr("script_huge_debug_string.pt"),
                    HasSubstr("code/__torch__.py.debug_pkl")));
}

TEST(Checkpoint, BadInputNamesTheFileAndTensor) {
  EXPECT_THAT(ErrorOf("not_a_checkpoint.pt"), HasSubstr("not a checkpoint"));
  EXPECT_THAT(ErrorOf("truncated.pt"), HasSubstr("zip"));
  EXPECT_THAT(ErrorOf("short_storage.pt"),
              AllOf(HasSubstr("fc1.weight"), HasSubstr("data/0")));
  EXPECT_THAT(ErrorOf("nan.pt"),
              AllOf(HasSubstr("fc1.weight"), HasSubstr("nan")));
  EXPECT_THAT(ErrorOf("inf.pt"),
              AllOf(HasSubstr("fc1.weight"), HasSubstr("inf")));
  EXPECT_EQ(ReadCheckpoint("/nonexistent/model.pt").status().code(),
            absl::StatusCode::kNotFound);
}

std::string TempPath(const std::string& name) {
  std::filesystem::create_directories(BuildDir() + "/test-tmp");
  return BuildDir() + "/test-tmp/" + name;
}

std::vector<RebuiltTensor> Rebuilt() {
  QuantizedTensor q{{2, 3},
                    QuantScheme::kPerChannelAsymmetric,
                    {-128, 0, 127, 1, 2, 3},
                    {0.5f, 0.25f},
                    {-1, 2}};
  RebuiltTensor weight{"fc.weight", {2, 3}, q, {}};
  RebuiltTensor bias{
      "fc.bias",
      {2},
      std::nullopt,
      MakeFloat32Tensor("fc.bias", {2}, std::vector<float>{1, 2})};
  RebuiltTensor counter{
      "bn.n",
      {},
      std::nullopt,
      Tensor{"bn.n", {}, DType::kInt64, std::vector<uint8_t>(8, 0)}};
  return {weight, bias, counter};
}

TEST(WriteCheckpoint, FloatAndInt8RoundTripThroughBothFormats) {
  for (const char* extension : {".pt", ".safetensors"}) {
    const std::string float_path = TempPath(std::string("float") + extension);
    ASSERT_TRUE(WriteCheckpoint(Rebuilt(), OutputKind::kFloat, float_path).ok())
        << extension;
    auto back = ReadCheckpoint(float_path);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_THAT(Names(*back), ElementsAre("fc.weight", "fc.bias", "bn.n"));
    EXPECT_EQ(ToFloat32(back->tensors[0]).value(),
              (std::vector<float>{-63.5f, 0.5f, 64.0f, -0.25f, 0.0f, 0.25f}));
    EXPECT_EQ(back->tensors[2].dtype, DType::kInt64);

    const std::string int8_path = TempPath(std::string("int8") + extension);
    ASSERT_TRUE(WriteCheckpoint(Rebuilt(), OutputKind::kInt8, int8_path).ok())
        << extension;
    auto int8 = ReadCheckpoint(int8_path);
    ASSERT_TRUE(int8.ok()) << int8.status();
    EXPECT_THAT(Names(*int8),
                ElementsAre("fc.weight", "fc.weight.__scale__",
                            "fc.weight.__zero_point__", "fc.bias", "bn.n"));
    EXPECT_EQ(int8->tensors[0].dtype, DType::kInt8);
    EXPECT_EQ(ToFloat32(int8->tensors[1]).value(),
              (std::vector<float>{0.5f, 0.25f}));
    EXPECT_EQ(ToFloat32(int8->tensors[2]).value(),
              (std::vector<float>{-1.0f, 2.0f}));
  }
  EXPECT_THAT(std::string(WriteCheckpoint(Rebuilt(), OutputKind::kFloat,
                                          TempPath("x.bin"))
                              .message()),
              HasSubstr(".pt"));
}

}  // namespace
}  // namespace weightcast
