# ---------------------------------------------------------------------------------------------
# Secret Manager: one secret per database, holding its full postgresql+psycopg:// URL (user, password,
# private IP, database, sslmode=require). Only the workloads that use a database can read it.
# ---------------------------------------------------------------------------------------------

resource "google_secret_manager_secret" "database_url" {
  for_each = local.databases

  secret_id = "${local.prefix}-${each.key}-database-url"
  labels    = local.labels

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }

  depends_on = [google_project_service.this]
}

resource "google_secret_manager_secret_version" "database_url" {
  for_each = local.databases

  secret      = google_secret_manager_secret.database_url[each.key].id
  secret_data = local.database_urls[each.key]
}
