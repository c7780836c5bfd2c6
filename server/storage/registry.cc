#include "server/storage/registry.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/base/printable.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

// Each entry moves the schema one version forward; never edit one that has
// shipped.
// The number each codec is stored under in layers.codec: a file format, frozen
// (the numbers weightcast.v1.LayerCodec had when the column was made; the API
// may renumber, this table may only grow).
struct StoredCodec {
  LayerCodec codec;
  int64_t stored;
};
constexpr StoredCodec kStoredCodecs[] = {
    {LayerCodec::kHevc, 1},      {LayerCodec::kRawInt8, 2},
    {LayerCodec::kZstdInt8, 3},  {LayerCodec::kFloat32, 4},
    {LayerCodec::kFloat16, 5},   {LayerCodec::kPassthrough, 6},
    {LayerCodec::kHevcDelta, 7},
};

int64_t StoredNumber(LayerCodec codec) {
  for (const StoredCodec& entry : kStoredCodecs) {
    if (entry.codec == codec) return entry.stored;
  }
  return 0;  // unreachable: every codec has a row
}

absl::StatusOr<LayerCodec> CodecOfStored(int64_t stored,
                                         absl::string_view layer) {
  for (const StoredCodec& entry : kStoredCodecs) {
    if (entry.stored == stored) return entry.codec;
  }
  return absl::DataLossError(absl::StrCat("registry: layer ", Printable(layer),
                                          " has unknown codec number ",
                                          stored));
}

constexpr const char* kMigrations[] = {
    R"sql(
    CREATE TABLE versions(
      id INTEGER PRIMARY KEY,
      model TEXT NOT NULL,
      version TEXT NOT NULL,
      description TEXT NOT NULL,
      source_sha256 TEXT NOT NULL,
      source_bytes INTEGER NOT NULL,
      ladder TEXT NOT NULL,
      policy_json TEXT NOT NULL,
      created INTEGER NOT NULL,
      UNIQUE(model, version));
    CREATE TABLE tensors(
      version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
      idx INTEGER NOT NULL,
      name TEXT NOT NULL,
      shape TEXT NOT NULL,
      dtype TEXT NOT NULL,
      layer_class TEXT NOT NULL,
      PRIMARY KEY(version_id, idx));
    CREATE TABLE tiers(
      version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
      tier TEXT NOT NULL,
      state INTEGER NOT NULL,
      error TEXT NOT NULL DEFAULT '',
      PRIMARY KEY(version_id, tier));
    CREATE TABLE layers(
      version_id INTEGER NOT NULL,
      tier TEXT NOT NULL,
      idx INTEGER NOT NULL,
      name TEXT NOT NULL,
      blob_sha256 TEXT NOT NULL,
      bytes INTEGER NOT NULL,
      codec INTEGER NOT NULL,
      decoded_sha256 BLOB NOT NULL,
      bits_per_weight REAL NOT NULL,
      sqnr_db REAL NOT NULL,
      picture INTEGER NOT NULL,
      PRIMARY KEY(version_id, tier, idx),
      FOREIGN KEY(version_id, tier) REFERENCES tiers(version_id, tier) ON DELETE CASCADE);
    CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    )sql",
    // 2: least-recently-used eviction of encoded tiers.
    R"sql(
    ALTER TABLE tiers ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;
    )sql",
    // 3: evaluation bundles and measured accuracy; per-layer QP (budget tiers).
    R"sql(
    ALTER TABLE versions ADD COLUMN eval_module_sha256 TEXT NOT NULL DEFAULT '';
    ALTER TABLE versions ADD COLUMN eval_data_sha256 TEXT NOT NULL DEFAULT '';
    ALTER TABLE versions ADD COLUMN reference_top1 REAL;
    ALTER TABLE versions ADD COLUMN reference_top2 REAL;
    ALTER TABLE versions ADD COLUMN eval_examples INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tiers ADD COLUMN top1 REAL;
    ALTER TABLE tiers ADD COLUMN top2 REAL;
    ALTER TABLE tiers ADD COLUMN eval_examples INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE layers ADD COLUMN qp INTEGER NOT NULL DEFAULT 0;
    )sql",
    // 4: deltas between versions.
    R"sql(
    ALTER TABLE versions ADD COLUMN base_version TEXT NOT NULL DEFAULT '';
    ALTER TABLE layers ADD COLUMN base_blob_sha256 TEXT NOT NULL DEFAULT '';
    )sql",
    // 5: the int8 quantization scheme of each layer (a name from
    // common/tensor/quantize.h; empty for float and passthrough layers). Until
    // now every int8 layer was per-tensor symmetric (codecs hevc 1, raw-int8 2,
    // zstd-int8 3, hevc-delta 7).
    R"sql(
    ALTER TABLE layers ADD COLUMN quant_scheme TEXT NOT NULL DEFAULT '';
    UPDATE layers SET quant_scheme = 'per-tensor-symmetric' WHERE codec IN (1, 2, 3, 7);
    )sql",
    // 6: replicas on one (PostgreSQL) registry: who encodes a tier, until
    // when (unix milliseconds, renewed while encoding).
    R"sql(
    CREATE TABLE tier_leases(
      version_id INTEGER NOT NULL,
      tier TEXT NOT NULL,
      holder TEXT NOT NULL,
      expires INTEGER NOT NULL,
      PRIMARY KEY(version_id, tier));
    )sql",
    // 7: evaluation bundles without labels, and the output cosine against the
    // float model (NULL: measured before it was).
    R"sql(
    ALTER TABLE versions ADD COLUMN reference_cosine REAL;
    ALTER TABLE versions ADD COLUMN eval_labelled INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE tiers ADD COLUMN output_cosine REAL;
    ALTER TABLE tiers ADD COLUMN eval_labelled INTEGER NOT NULL DEFAULT 1;
    )sql",
};

constexpr char kVersionColumns[] =
    "id, model, version, description, source_sha256, source_bytes, ladder, "
    "policy_json, created, "
    "eval_module_sha256, eval_data_sha256, reference_top1, reference_top2, "
    "eval_examples, base_version, reference_cosine, eval_labelled";

std::string JoinShape(const std::vector<int64_t>& shape) {
  return absl::StrJoin(shape, ",");
}

std::vector<int64_t> SplitShape(const std::string& text) {
  std::vector<int64_t> shape;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int64_t d = 0;
    if (absl::SimpleAtoi(part, &d)) shape.push_back(d);
  }
  return shape;
}

// The accuracy in columns (top1, top2, examples) from `first` on and
// (output cosine, labelled) from `more` on; none while top1 is NULL.
std::optional<Accuracy> AccuracyAt(Statement& query, int first, int more) {
  if (query.IsNull(first)) return std::nullopt;
  Accuracy accuracy{query.Real(first), query.Real(first + 1),
                    query.Int(first + 2)};
  if (!query.IsNull(more)) accuracy.output_cosine = query.Real(more);
  accuracy.labelled = query.Int(more + 1) != 0;
  return accuracy;
}

// Binds an accuracy's five columns: top1, top2, examples at `first`..,
// output cosine and labelled at `more`.. (an absent cosine stays NULL).
void BindAccuracy(Statement& statement, const Accuracy& accuracy, int first,
                  int more) {
  statement.Bind(first, accuracy.top1)
      .Bind(first + 1, accuracy.top2)
      .Bind(first + 2, accuracy.examples)
      .Bind(more + 1, int64_t{accuracy.labelled ? 1 : 0});
  if (accuracy.output_cosine) statement.Bind(more, *accuracy.output_cosine);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Registry>> Registry::Open(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(path));
  std::unique_ptr<Registry> registry(new Registry(std::move(db)));
  absl::MutexLock lock(&registry->mu_);
  RETURN_IF_ERROR(registry->Migrate());
  // Encodings do not survive a restart: whatever was in flight starts again on
  // demand. Those another replica holds a live lease on are left to it.
  ASSIGN_OR_RETURN(
      Statement reset,
      registry->db_->Prepare(
          "UPDATE tiers SET state = ?1 WHERE state = ?2 AND NOT EXISTS "
          "(SELECT 1 FROM tier_leases l WHERE l.version_id = tiers.version_id "
          "AND l.tier = tiers.tier AND l.expires > ?3)"));
  RETURN_IF_ERROR(
      reset.Bind(1, int64_t{static_cast<int>(TierState::kNotEncoded)})
          .Bind(2, int64_t{static_cast<int>(TierState::kEncoding)})
          .Bind(3, absl::ToUnixMillis(absl::Now()))
          .Run());
  return registry;
}

absl::Status Registry::Migrate() {
  absl::Status status = db_->Migrate(
      std::vector<const char*>(std::begin(kMigrations), std::end(kMigrations)));
  if (status.code() == absl::StatusCode::kFailedPrecondition) {
    return absl::FailedPreconditionError(
        absl::StrCat("registry ", status.message()));
  }
  return status;
}

absl::StatusOr<int64_t> Registry::AddVersion(
    const VersionRecord& v, const std::vector<std::string>& tiers) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Transaction transaction, Transaction::Begin(db_.get()));
  ASSIGN_OR_RETURN(
      Statement insert,
      db_->Prepare("INSERT INTO versions(model, version, description, "
                   "source_sha256, source_bytes, ladder, policy_json, created, "
                   "eval_module_sha256, eval_data_sha256, reference_top1, "
                   "reference_top2, eval_examples, base_version, "
                   "reference_cosine, eval_labelled) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
                   "?13, ?14, ?15, ?16) RETURNING id"));
  insert.Bind(1, v.model)
      .Bind(2, v.version)
      .Bind(3, v.description)
      .Bind(4, v.source_sha256)
      .Bind(5, static_cast<int64_t>(v.source_bytes))
      .Bind(6, v.ladder)
      .Bind(7, v.policy_json)
      .Bind(8, v.created_unix_seconds)
      .Bind(9, v.eval_module_sha256)
      .Bind(10, v.eval_data_sha256)
      .Bind(14, v.base_version);
  if (v.reference_accuracy) {
    BindAccuracy(insert, *v.reference_accuracy, 11, 15);
  } else {
    insert.Bind(13, int64_t{0}).Bind(16, int64_t{1});
  }
  absl::StatusOr<bool> inserted = insert.Step();
  if (inserted.status().code() == absl::StatusCode::kAlreadyExists) {
    return absl::AlreadyExistsError(absl::StrCat(
        "model '", v.model, "' already has a version '", v.version, "'"));
  }
  RETURN_IF_ERROR(inserted.status());
  if (!*inserted) return absl::InternalError("registry: INSERT returned no id");
  const int64_t id = insert.Int(0);
  RETURN_IF_ERROR(insert.Run());
  for (size_t i = 0; i < v.tensors.size(); ++i) {
    const TensorRecord& t = v.tensors[i];
    ASSIGN_OR_RETURN(
        Statement tensor,
        db_->Prepare("INSERT INTO tensors(version_id, idx, name, shape, dtype, "
                     "layer_class) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
    RETURN_IF_ERROR(tensor.Bind(1, id)
                        .Bind(2, static_cast<int64_t>(i))
                        .Bind(3, t.name)
                        .Bind(4, JoinShape(t.shape))
                        .Bind(5, t.dtype)
                        .Bind(6, t.layer_class)
                        .Run());
  }
  for (const std::string& tier : tiers) {
    ASSIGN_OR_RETURN(
        Statement insert_tier,
        db_->Prepare(
            "INSERT INTO tiers(version_id, tier, state) VALUES (?1, ?2, ?3)"));
    RETURN_IF_ERROR(
        insert_tier.Bind(1, id)
            .Bind(2, tier)
            .Bind(3, int64_t{static_cast<int>(TierState::kNotEncoded)})
            .Run());
  }
  RETURN_IF_ERROR(transaction.Commit());
  return id;
}

absl::StatusOr<VersionRecord> Registry::GetVersion(const std::string& model,
                                                   const std::string& version) {
  absl::MutexLock lock(&mu_);
  const bool latest = version == "latest" || version.empty();
  ASSIGN_OR_RETURN(
      Statement query,
      db_->Prepare(absl::StrCat(
          "SELECT ", kVersionColumns, " FROM versions WHERE model = ?1 ",
          latest ? "ORDER BY id DESC LIMIT 1" : "AND version = ?2")));
  query.Bind(1, model);
  if (!latest) query.Bind(2, version);
  ASSIGN_OR_RETURN(bool row, query.Step());
  if (!row) {
    return absl::NotFoundError(latest ? absl::StrCat("no model ", Echo(model))
                                      : absl::StrCat("model ", Echo(model),
                                                     " has no version ",
                                                     Echo(version)));
  }
  VersionRecord v{query.Int(0),  query.Text(1),
                  query.Text(2), query.Text(3),
                  query.Text(4), static_cast<uint64_t>(query.Int(5)),
                  query.Text(6), query.Text(7),
                  query.Int(8),  {},
                  query.Text(9), query.Text(10),
                  std::nullopt};
  v.reference_accuracy = AccuracyAt(query, 11, 15);
  v.base_version = query.Text(14);
  ASSIGN_OR_RETURN(Statement tensors,
                   db_->Prepare("SELECT name, shape, dtype, layer_class FROM "
                                "tensors WHERE version_id = ?1 ORDER BY idx"));
  tensors.Bind(1, v.id);
  while (true) {
    ASSIGN_OR_RETURN(bool more, tensors.Step());
    if (!more) break;
    v.tensors.push_back({tensors.Text(0), SplitShape(tensors.Text(1)),
                         tensors.Text(2), tensors.Text(3)});
  }
  return v;
}

absl::StatusOr<std::vector<std::pair<std::string, std::vector<std::string>>>>
Registry::ListModels() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement query,
      db_->Prepare("SELECT model, version FROM versions ORDER BY model, id"));
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, query.Step());
    if (!row) break;
    if (out.empty() || out.back().first != query.Text(0))
      out.emplace_back(query.Text(0), std::vector<std::string>{});
    out.back().second.push_back(query.Text(1));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> Registry::ReferencedBlobsLocked() {
  ASSIGN_OR_RETURN(
      Statement query,
      db_->Prepare(
          "SELECT source_sha256 FROM versions UNION SELECT eval_module_sha256 "
          "FROM versions WHERE eval_module_sha256 != '' "
          "UNION SELECT eval_data_sha256 FROM versions WHERE eval_data_sha256 "
          "!= '' UNION SELECT blob_sha256 FROM layers "
          "UNION SELECT base_blob_sha256 FROM layers WHERE base_blob_sha256 != "
          "''"));
  std::vector<std::string> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, query.Step());
    if (!row) break;
    out.push_back(query.Text(0));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> Registry::UnreferencedLocked(
    const std::vector<std::string>& candidates) {
  ASSIGN_OR_RETURN(const std::vector<std::string> referenced,
                   ReferencedBlobsLocked());
  const absl::flat_hash_set<std::string> still(referenced.begin(),
                                               referenced.end());
  absl::flat_hash_set<std::string> seen;
  std::vector<std::string> unreferenced;
  for (const std::string& sha : candidates) {
    if (!still.contains(sha) && seen.insert(sha).second)
      unreferenced.push_back(sha);
  }
  return unreferenced;
}

absl::StatusOr<std::vector<std::string>> Registry::Unreferenced(
    const std::vector<std::string>& candidates) {
  absl::MutexLock lock(&mu_);
  return UnreferencedLocked(candidates);
}

absl::StatusOr<std::vector<std::string>> Registry::ReferencedBlobs() {
  absl::MutexLock lock(&mu_);
  return ReferencedBlobsLocked();
}

absl::StatusOr<std::vector<std::string>> Registry::DeleteVersion(
    int64_t version_id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement blobs,
      db_->Prepare("SELECT source_sha256 FROM versions WHERE id = ?1 UNION "
                   "SELECT eval_module_sha256 FROM versions WHERE id = ?1 "
                   "AND eval_module_sha256 != '' UNION SELECT eval_data_sha256 "
                   "FROM versions WHERE id = ?1 AND eval_data_sha256 != '' "
                   "UNION SELECT blob_sha256 FROM layers WHERE version_id = ?1 "
                   "UNION SELECT base_blob_sha256 FROM layers WHERE version_id "
                   "= ?1 AND base_blob_sha256 != ''"));
  blobs.Bind(1, version_id);
  std::vector<std::string> candidates;
  while (true) {
    ASSIGN_OR_RETURN(bool row, blobs.Step());
    if (!row) break;
    candidates.push_back(blobs.Text(0));
  }
  ASSIGN_OR_RETURN(Statement remove,
                   db_->Prepare("DELETE FROM versions WHERE id = ?1"));
  RETURN_IF_ERROR(remove.Bind(1, version_id).Run());
  return UnreferencedLocked(candidates);
}

absl::StatusOr<std::vector<LayerRecord>> Registry::LayersLocked(
    int64_t version_id, const std::string& tier) {
  ASSIGN_OR_RETURN(
      Statement query,
      db_->Prepare("SELECT name, blob_sha256, bytes, codec, decoded_sha256, "
                   "bits_per_weight, sqnr_db, picture, qp, base_blob_sha256, "
                   "quant_scheme FROM layers WHERE version_id = ?1 AND tier = "
                   "?2 ORDER BY idx"));
  query.Bind(1, version_id).Bind(2, tier);
  std::vector<LayerRecord> layers;
  while (true) {
    ASSIGN_OR_RETURN(bool row, query.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(const LayerCodec codec,
                     CodecOfStored(query.Int(3), query.Text(0)));
    layers.push_back({query.Text(0), query.Text(1),
                      static_cast<uint64_t>(query.Int(2)), codec, query.Blob(4),
                      query.Real(5), query.Real(6), query.Int(7) != 0,
                      static_cast<int>(query.Int(8)), query.Text(9)});
    layers.back().quant_scheme = query.Text(10);
  }
  return layers;
}

absl::StatusOr<std::vector<TierRecord>> Registry::GetTiers(int64_t version_id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement query,
      db_->Prepare("SELECT tier, state, error, top1, top2, eval_examples, "
                   "output_cosine, eval_labelled FROM tiers WHERE version_id "
                   "= ?1 ORDER BY rowid"));
  query.Bind(1, version_id);
  std::vector<TierRecord> tiers;
  while (true) {
    ASSIGN_OR_RETURN(bool row, query.Step());
    if (!row) break;
    tiers.push_back({query.Text(0),
                     static_cast<TierState>(query.Int(1)),
                     query.Text(2),
                     {},
                     AccuracyAt(query, 3, 6)});
  }
  for (TierRecord& tier : tiers) {
    if (tier.state == TierState::kReady) {
      ASSIGN_OR_RETURN(tier.layers, LayersLocked(version_id, tier.tier));
    }
  }
  return tiers;
}

absl::StatusOr<TierRecord> Registry::GetTier(int64_t version_id,
                                             const std::string& tier) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement query,
      db_->Prepare("SELECT state, error, top1, top2, eval_examples, "
                   "output_cosine, eval_labelled FROM tiers WHERE version_id "
                   "= ?1 AND tier = ?2"));
  query.Bind(1, version_id).Bind(2, tier);
  ASSIGN_OR_RETURN(bool row, query.Step());
  if (!row)
    return absl::NotFoundError(
        absl::StrCat("tier ", Echo(tier), " is not in this version's ladder"));
  TierRecord record{tier,
                    static_cast<TierState>(query.Int(0)),
                    query.Text(1),
                    {},
                    AccuracyAt(query, 2, 5)};
  if (record.state == TierState::kReady) {
    ASSIGN_OR_RETURN(record.layers, LayersLocked(version_id, tier));
  }
  return record;
}

absl::Status Registry::AddTier(int64_t version_id, const std::string& tier) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement insert,
                   db_->Prepare("INSERT INTO tiers(version_id, tier, state) "
                                "VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING"));
  return insert.Bind(1, version_id)
      .Bind(2, tier)
      .Bind(3, int64_t{static_cast<int>(TierState::kNotEncoded)})
      .Run();
}

absl::Status Registry::SetTierState(int64_t version_id, const std::string& tier,
                                    TierState state, const std::string& error) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement update,
                   db_->Prepare("UPDATE tiers SET state = ?1, error = ?2 WHERE "
                                "version_id = ?3 AND tier = ?4"));
  return update.Bind(1, int64_t{static_cast<int>(state)})
      .Bind(2, error)
      .Bind(3, version_id)
      .Bind(4, tier)
      .Run();
}

absl::Status Registry::CompleteTier(int64_t version_id, const std::string& tier,
                                    const std::vector<LayerRecord>& layers) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Transaction transaction, Transaction::Begin(db_.get()));
  ASSIGN_OR_RETURN(
      Statement clear,
      db_->Prepare("DELETE FROM layers WHERE version_id = ?1 AND tier = ?2"));
  RETURN_IF_ERROR(clear.Bind(1, version_id).Bind(2, tier).Run());
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerRecord& l = layers[i];
    ASSIGN_OR_RETURN(
        Statement insert,
        db_->Prepare(
            "INSERT INTO layers(version_id, tier, idx, name, blob_sha256, "
            "bytes, codec, decoded_sha256, bits_per_weight, "
            "sqnr_db, picture, qp, base_blob_sha256, quant_scheme) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, "
            "?14)"));
    RETURN_IF_ERROR(insert.Bind(1, version_id)
                        .Bind(2, tier)
                        .Bind(3, static_cast<int64_t>(i))
                        .Bind(4, l.name)
                        .Bind(5, l.blob_sha256)
                        .Bind(6, static_cast<int64_t>(l.bytes))
                        .Bind(7, StoredNumber(l.codec))
                        .BindBlob(8, l.decoded_sha256)
                        .Bind(9, l.bits_per_weight)
                        .Bind(10, l.sqnr_db)
                        .Bind(11, int64_t{l.picture ? 1 : 0})
                        .Bind(12, int64_t{l.qp})
                        .Bind(13, l.base_blob_sha256)
                        .Bind(14, l.quant_scheme)
                        .Run());
  }
  ASSIGN_OR_RETURN(Statement ready,
                   db_->Prepare("UPDATE tiers SET state = ?1, error = '' WHERE "
                                "version_id = ?2 AND tier = ?3"));
  RETURN_IF_ERROR(ready.Bind(1, int64_t{static_cast<int>(TierState::kReady)})
                      .Bind(2, version_id)
                      .Bind(3, tier)
                      .Run());
  return transaction.Commit();
}

absl::Status Registry::SetTierAccuracy(int64_t version_id,
                                       const std::string& tier,
                                       const Accuracy& accuracy) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement update,
      db_->Prepare("UPDATE tiers SET top1 = ?1, top2 = ?2, eval_examples = ?3, "
                   "output_cosine = ?6, eval_labelled = ?7 WHERE version_id = "
                   "?4 AND tier = ?5"));
  BindAccuracy(update, accuracy, 1, 6);
  return update.Bind(4, version_id).Bind(5, tier).Run();
}

absl::StatusOr<std::vector<std::array<std::string, 3>>>
Registry::TiersAwaitingAccuracy() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement query,
                   db_->Prepare("SELECT v.model, v.version, t.tier FROM tiers "
                                "t JOIN versions v ON v.id = t.version_id "
                                "WHERE t.state = ?1 AND t.top1 IS NULL AND "
                                "v.eval_module_sha256 != '' ORDER BY t.rowid"));
  query.Bind(1, int64_t{static_cast<int>(TierState::kReady)});
  std::vector<std::array<std::string, 3>> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, query.Step());
    if (!row) break;
    out.push_back({query.Text(0), query.Text(1), query.Text(2)});
  }
  return out;
}

absl::Status Registry::TouchTier(int64_t version_id, const std::string& tier,
                                 int64_t now) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement update,
                   db_->Prepare("UPDATE tiers SET last_used = ?1 WHERE "
                                "version_id = ?2 AND tier = ?3"));
  return update.Bind(1, now).Bind(2, version_id).Bind(3, tier).Run();
}

absl::StatusOr<std::vector<CachedTier>> Registry::ReadyTiersByLastUse() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement query,
      db_->Prepare("SELECT t.version_id, t.tier, v.ladder, t.last_used, "
                   "(SELECT COALESCE(SUM(bytes), 0) FROM layers l WHERE "
                   "l.version_id = t.version_id AND l.tier = t.tier) "
                   "FROM tiers t JOIN versions v ON v.id = t.version_id WHERE "
                   "t.state = ?1 ORDER BY t.last_used, t.rowid"));
  query.Bind(1, int64_t{static_cast<int>(TierState::kReady)});
  std::vector<CachedTier> tiers;
  while (true) {
    ASSIGN_OR_RETURN(bool row, query.Step());
    if (!row) break;
    tiers.push_back({query.Int(0), query.Text(1), query.Text(2), query.Int(3),
                     static_cast<uint64_t>(query.Int(4))});
  }
  return tiers;
}

absl::StatusOr<std::vector<std::string>> Registry::EvictTier(
    int64_t version_id, const std::string& tier) {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> candidates;
  {
    ASSIGN_OR_RETURN(std::vector<LayerRecord> layers,
                     LayersLocked(version_id, tier));
    for (const LayerRecord& layer : layers) {
      candidates.push_back(layer.blob_sha256);
      if (!layer.base_blob_sha256.empty())
        candidates.push_back(layer.base_blob_sha256);
    }
  }
  ASSIGN_OR_RETURN(Transaction transaction, Transaction::Begin(db_.get()));
  ASSIGN_OR_RETURN(
      Statement clear,
      db_->Prepare("DELETE FROM layers WHERE version_id = ?1 AND tier = ?2"));
  RETURN_IF_ERROR(clear.Bind(1, version_id).Bind(2, tier).Run());
  ASSIGN_OR_RETURN(
      Statement state,
      db_->Prepare(
          "UPDATE tiers SET state = ?1 WHERE version_id = ?2 AND tier = ?3"));
  RETURN_IF_ERROR(
      state.Bind(1, int64_t{static_cast<int>(TierState::kNotEncoded)})
          .Bind(2, version_id)
          .Bind(3, tier)
          .Run());
  RETURN_IF_ERROR(transaction.Commit());
  return UnreferencedLocked(candidates);
}

absl::StatusOr<uint64_t> Registry::EncodedBytes() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement query,
                   db_->Prepare("SELECT COALESCE(SUM(bytes), 0) FROM layers"));
  ASSIGN_OR_RETURN(bool row, query.Step());
  return row ? static_cast<uint64_t>(query.Int(0)) : 0;
}

absl::StatusOr<std::string> Registry::GetSetting(const std::string& key,
                                                 const std::string& fallback) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement query,
                   db_->Prepare("SELECT value FROM settings WHERE key = ?1"));
  query.Bind(1, key);
  ASSIGN_OR_RETURN(bool row, query.Step());
  return row ? query.Text(0) : fallback;
}

absl::Status Registry::SetSetting(const std::string& key,
                                  const std::string& value) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement upsert,
      db_->Prepare("INSERT INTO settings(key, value) VALUES (?1, ?2) ON "
                   "CONFLICT(key) DO UPDATE SET value = excluded.value"));
  return upsert.Bind(1, key).Bind(2, value).Run();
}

absl::Status Registry::Ping() {
  absl::MutexLock lock(&mu_);
  return db_->Ping();
}

absl::StatusOr<bool> Registry::AcquireTierLease(int64_t version_id,
                                                const std::string& tier,
                                                const std::string& holder,
                                                int64_t now_ms,
                                                int64_t expires_ms) {
  absl::MutexLock lock(&mu_);
  // One statement, atomic in both engines: a new lease, or ours renewed, or
  // an expired one taken over; another holder's live lease stays (no row).
  ASSIGN_OR_RETURN(
      Statement upsert,
      db_->Prepare("INSERT INTO tier_leases(version_id, tier, holder, expires) "
                   "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(version_id, tier) DO "
                   "UPDATE SET holder = excluded.holder, expires = "
                   "excluded.expires WHERE tier_leases.holder = "
                   "excluded.holder OR tier_leases.expires <= ?5 "
                   "RETURNING holder"));
  upsert.Bind(1, version_id)
      .Bind(2, tier)
      .Bind(3, holder)
      .Bind(4, expires_ms)
      .Bind(5, now_ms);
  ASSIGN_OR_RETURN(const bool row, upsert.Step());
  RETURN_IF_ERROR(upsert.Run());
  return row;
}

absl::Status Registry::RenewTierLeases(const std::string& holder,
                                       int64_t expires_ms) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement update,
      db_->Prepare("UPDATE tier_leases SET expires = ?1 WHERE holder = ?2"));
  return update.Bind(1, expires_ms).Bind(2, holder).Run();
}

absl::Status Registry::ReleaseTierLease(int64_t version_id,
                                        const std::string& tier,
                                        const std::string& holder) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement remove,
                   db_->Prepare("DELETE FROM tier_leases WHERE version_id = ?1 "
                                "AND tier = ?2 AND holder = ?3"));
  return remove.Bind(1, version_id).Bind(2, tier).Bind(3, holder).Run();
}

}  // namespace weightcast
