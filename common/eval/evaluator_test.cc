#include "common/eval/evaluator.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "common/checkpoint/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/paths.h"
#include "tests/testing/status_matchers.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

std::string Fixture(const std::string& name) {
  return FixtureDir() + "/" + name;
}

// SmallNet (conv, BatchNorm, two FC) scripted by PyTorch, its checkpoint and an
// evaluation set whose accuracy PyTorch computed.
class EvaluatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto evaluator =
        Evaluator::Load(Fixture("script.pt"), Fixture("eval_data.pt"));
    ASSERT_TRUE(evaluator.ok()) << evaluator.status();
    evaluator_ = *std::move(evaluator);
    auto model = ReadCheckpoint(Fixture("cnn_bn.pt"));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }
  std::unique_ptr<Evaluator> evaluator_;
  Model model_;
};

TEST_F(EvaluatorTest, MatchesPyTorchsAccuracy) {
  std::ifstream in(Fixture("eval_expected.json"));
  const nlohmann::json expected = nlohmann::json::parse(in);
  ASSERT_TRUE(evaluator_->CheckFits(model_).ok());
  auto accuracy = evaluator_->Evaluate(model_);
  ASSERT_TRUE(accuracy.ok()) << accuracy.status();
  EXPECT_EQ(accuracy->examples, 64);
  EXPECT_DOUBLE_EQ(accuracy->top1, expected["top1"].get<double>());
  EXPECT_DOUBLE_EQ(accuracy->top2, expected["top2"].get<double>());
}

TEST_F(EvaluatorTest, DifferentWeightsGiveADifferentAccuracyAndBackAgain) {
  Model zeroed = model_;
  for (Tensor& t : zeroed.tensors) {
    if (t.name == "fc2.weight") std::fill(t.data.begin(), t.data.end(), 0);
  }
  auto broken = evaluator_->Evaluate(zeroed);
  ASSERT_TRUE(broken.ok());
  auto again =
      evaluator_->Evaluate(model_);  // every tensor is replaced on each call
  ASSERT_TRUE(again.ok());
  EXPECT_NE(broken->top1, again->top1);
  EXPECT_DOUBLE_EQ(again->top1, 50.0);
}

TEST_F(EvaluatorTest, OutputCosineAgainstTheFloatModelMatchesPyTorchs) {
  std::ifstream in(Fixture("eval_expected.json"));
  const nlohmann::json expected = nlohmann::json::parse(in);
  EXPECT_FALSE(evaluator_->Evaluate(model_)->output_cosine.has_value());
  auto own = evaluator_->SetReference(model_);
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_DOUBLE_EQ(own->top1, 50.0);  // the float model's figures, one pass
  EXPECT_EQ(own->output_cosine, 1.0);
  auto same = evaluator_->Evaluate(model_);
  ASSERT_TRUE(same.ok()) << same.status();
  ASSERT_TRUE(same->output_cosine.has_value());
  EXPECT_NEAR(*same->output_cosine, 1.0, 1e-9);
  EXPECT_DOUBLE_EQ(same->top1, 50.0);  // labelled: top-1 as well
  Model zeroed = model_;
  for (Tensor& t : zeroed.tensors) {
    if (t.name == "fc2.weight") std::fill(t.data.begin(), t.data.end(), 0);
  }
  auto broken = evaluator_->Evaluate(zeroed);
  ASSERT_TRUE(broken.ok()) << broken.status();
  EXPECT_NEAR(*broken->output_cosine,
              expected["cosine_fc2_zeroed"].get<double>(), 1e-5);
}

// Every layer's input features, as PyTorch's forward hooks see them
// (tests/fixtures/make_checkpoints.py): the convolution's one input channel,
// fc1's 5408 features and fc2's 256, over the bundle's 64 images.
TEST_F(EvaluatorTest, InputRmsOfEveryLayerMatchesPyTorchs) {
  auto expected = ReadCheckpoint(Fixture("eval_input_rms.pt"));
  ASSERT_TRUE(expected.ok()) << expected.status();
  auto rms = evaluator_->InputRms(model_);
  ASSERT_TRUE(rms.ok()) << rms.status();
  ASSERT_EQ(rms->size(), 3u);
  for (const Tensor& t : expected->tensors) {
    const std::vector<float> want = ToFloat32(t).value();
    ASSERT_TRUE(rms->count(t.name)) << t.name;
    const std::vector<float>& got = rms->at(t.name);
    ASSERT_EQ(got.size(), want.size()) << t.name;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 1e-5 * std::max(1.0f, want[i]))
          << t.name << " feature " << i;
    }
  }
  EXPECT_EQ(rms->at("fc1.weight").size(), 8u * 26 * 26);
  // forward returns fc2's output as it is: the model's last layer.
  EXPECT_EQ(evaluator_->OutputLayers().value(),
            std::set<std::string>{"fc2.weight"});

  // The figures are the model's: with fc1 zeroed, fc2's inputs are all
  // relu(0) = 0 and the layers before it are unchanged.
  Model zeroed = model_;
  for (Tensor& t : zeroed.tensors) {
    if (t.name == "fc1.weight" || t.name == "fc1.bias")
      std::fill(t.data.begin(), t.data.end(), 0);
  }
  auto after = evaluator_->InputRms(zeroed);
  ASSERT_TRUE(after.ok()) << after.status();
  for (float v : after->at("fc2.weight")) ASSERT_EQ(v, 0.0f);
  EXPECT_EQ(after->at("fc1.weight"), rms->at("fc1.weight"));

  // The probe leaves the evaluation as it was.
  auto accuracy = evaluator_->Evaluate(model_);
  ASSERT_TRUE(accuracy.ok()) << accuracy.status();
  EXPECT_DOUBLE_EQ(accuracy->top1, 50.0);
}

TEST_F(EvaluatorTest, InputRmsNamesATensorThatDoesNotFit) {
  auto mlp = ReadCheckpoint(Fixture("mlp.pt"));
  ASSERT_TRUE(mlp.ok());
  auto rms = evaluator_->InputRms(*mlp);
  EXPECT_EQ(rms.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(rms.status().message()), HasSubstr("fc1.weight"));
}

TEST_F(EvaluatorTest, KeptReferenceOutputsServeAnotherEvaluatorOfTheBundle) {
  EXPECT_EQ(evaluator_->reference().rows, 0);  // none kept yet
  ASSERT_TRUE(evaluator_->SetReference(model_).ok());
  const ReferenceOutputs kept = evaluator_->reference();
  EXPECT_EQ(kept.rows, evaluator_->examples());
  EXPECT_EQ(evaluator_->reference(kept.rows * kept.columns - 1).rows,
            0);  // more values than asked for: none
  EXPECT_EQ(static_cast<int64_t>(kept.values.size()), kept.rows * kept.columns);
  Model zeroed = model_;
  for (Tensor& t : zeroed.tensors) {
    if (t.name == "fc2.weight") std::fill(t.data.begin(), t.data.end(), 0);
  }
  auto other =
      Evaluator::Load(Fixture("script.pt"), Fixture("eval_data.pt")).value();
  ASSERT_TRUE(other->SetReference(kept).ok());
  EXPECT_EQ(other->Evaluate(zeroed)->output_cosine,
            evaluator_->Evaluate(zeroed)->output_cosine);
  ReferenceOutputs short_one = kept;
  short_one.values.pop_back();
  EXPECT_EQ(other->SetReference(short_one).code(),
            absl::StatusCode::kInvalidArgument);
  ReferenceOutputs fewer_rows = kept;
  fewer_rows.rows -= 1;
  fewer_rows.values.resize(fewer_rows.rows * fewer_rows.columns);
  EXPECT_EQ(other->SetReference(fewer_rows).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Evaluator, ABundleOfInputsOnlyMeasuresTheOutputCosine) {
  auto evaluator =
      Evaluator::Load(Fixture("script.pt"), Fixture("eval_inputs.pt"));
  ASSERT_TRUE(evaluator.ok()) << evaluator.status();
  EXPECT_FALSE((*evaluator)->labelled());
  EXPECT_EQ((*evaluator)->examples(), 64);
  auto model = ReadCheckpoint(Fixture("cnn_bn.pt"));
  ASSERT_TRUE(model.ok());
  auto own = (*evaluator)->SetReference(*model);
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_FALSE(own->labelled);
  EXPECT_EQ(own->output_cosine, 1.0);
  auto accuracy = (*evaluator)->Evaluate(*model);
  ASSERT_TRUE(accuracy.ok()) << accuracy.status();
  EXPECT_FALSE(accuracy->labelled);
  EXPECT_EQ(accuracy->top1, 0);
  EXPECT_EQ(accuracy->examples, 64);
  EXPECT_NEAR(accuracy->output_cosine.value(), 1.0, 1e-9);
}

// A server shutting down cancels the evaluation in progress: every pass asks
// the hook before each batch, stops with CANCELLED when it says so, and runs
// again once it no longer does.
TEST_F(EvaluatorTest, EveryPassStopsWhenCancelledAndRunsAgainAfter) {
  int asked = 0;
  bool cancel = false;
  evaluator_->SetCancel([&] {
    ++asked;
    return cancel;
  });
  ASSERT_THAT(evaluator_->Evaluate(model_), IsOk());
  EXPECT_EQ(asked, 1);  // 64 examples: one batch
  cancel = true;
  EXPECT_THAT(evaluator_->Evaluate(model_),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("cancelled")));
  EXPECT_THAT(evaluator_->SetReference(model_),
              StatusIs(absl::StatusCode::kCancelled));
  EXPECT_THAT(evaluator_->InputRms(model_),
              StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(asked, 4);
  cancel = false;
  EXPECT_THAT(evaluator_->Evaluate(model_), IsOk());
}

TEST_F(EvaluatorTest, NamesTheTensorThatDoesNotFit) {
  Model other = model_;
  other.tensors[0].shape = {1, 2, 3};
  EXPECT_THAT(std::string(evaluator_->CheckFits(other).message()),
              HasSubstr(other.tensors[0].name));
  Model missing = model_;
  const std::string dropped = missing.tensors.back().name;
  missing.tensors.pop_back();
  EXPECT_THAT(std::string(evaluator_->CheckFits(missing).message()),
              HasSubstr(dropped));
  auto mlp = ReadCheckpoint(Fixture("mlp.pt"));
  ASSERT_TRUE(mlp.ok());
  EXPECT_EQ(evaluator_->Evaluate(*mlp).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Evaluator, RejectsBadBundlesNamingTheFile) {
  auto not_module = Evaluator::Load(Fixture("mlp.pt"), Fixture("eval_data.pt"));
  EXPECT_EQ(not_module.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(not_module.status().message()), HasSubstr("mlp.pt"));
  auto no_inputs = Evaluator::Load(Fixture("script.pt"), Fixture("mlp.pt"));
  EXPECT_THAT(std::string(no_inputs.status().message()),
              HasSubstr("\"inputs\""));
  auto missing =
      Evaluator::Load(Fixture("script.pt"), Fixture("no_such_file.pt"));
  EXPECT_FALSE(missing.ok());
}

TEST(Evaluator, DamagedTorchScriptModuleIsInvalidArgumentSayingWhy) {
  const std::pair<std::string, std::string> damaged[] = {
      {"script_bad_syntax.pt", "expected"},
      {"script_unknown_op.pt", "aten::no_such_op"},
      {"script_short_storage.pt",
       "record data/7 holds 2768896 bytes"},  // else written past
      {"script_view_past_storage.pt",
       "tensor 'fc2.bias' [10] reaches past its stored data"}};
  for (const auto& [fixture, why] : damaged) {
    auto evaluator = Evaluator::Load(Fixture(fixture), Fixture("eval_data.pt"));
    EXPECT_EQ(evaluator.status().code(), absl::StatusCode::kInvalidArgument)
        << fixture;
    EXPECT_THAT(std::string(evaluator.status().message()),
                testing::AllOf(HasSubstr(fixture), HasSubstr(why)));
  }
}

}  // namespace
}  // namespace weightcast
