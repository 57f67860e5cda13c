# ---------------------------------------------------------------------------------------------
# Secrets Manager: the credentials of each application database user (loopml, mlflow) as JSON
# {username, password, host, port, dbname, url}, encrypted with the data key. db-bootstrap.sql
# creates the users with these passwords; pods read their own secret only (identities.tf).
# ---------------------------------------------------------------------------------------------

locals {
  databases = toset(["mlflow", "loopml"])

  # SQLAlchemy URLs as LOOPML_DATABASE_URL and the MLflow server's --backend-store-uri take them.
  # The driver is named: a bare postgresql:// means psycopg2, which the image does not carry.
  database_urls = {
    for db in local.databases :
    db => "postgresql+psycopg://${db}:${random_password.db[db].result}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/${db}?sslmode=require"
  }
}

resource "random_password" "db" {
  for_each = local.databases

  length  = 32
  special = false # the password goes into a URL
}

resource "aws_secretsmanager_secret" "database" {
  #checkov:skip=CKV2_AWS_57:Rotating an application user's password needs a rotation Lambda that also runs ALTER ROLE inside the VPC; rotate by re-running db-bootstrap.sql after terraform apply -replace=random_password.db. The master password is rotated by RDS.
  for_each = local.databases

  name                    = "${local.prefix}/database/${each.key}"
  description             = "Credentials of the ${each.key} database user (JSON with a postgresql+psycopg:// url)"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "database" {
  for_each = local.databases

  secret_id = aws_secretsmanager_secret.database[each.key].id
  secret_string = jsonencode({
    username = each.key
    password = random_password.db[each.key].result
    host     = aws_db_instance.this.address
    port     = aws_db_instance.this.port
    dbname   = each.key
    url      = local.database_urls[each.key]
  })
}
