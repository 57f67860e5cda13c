-- Creates loopml's database users and the mlflow database on the RDS instance. Idempotent: run it
-- after the first terraform apply and again after a password change, as the RDS master user, from
-- inside the VPC (a pod in the cluster; see ../README.md). psql variables:
--   loopml_password, mlflow_password   from the Secrets Manager secrets in `database_secrets`
-- RDS already created the `loopml` database (db_name); this script hands it to the loopml user.
\set ON_ERROR_STOP on

SELECT 'CREATE ROLE loopml LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'loopml') \gexec
SELECT 'CREATE ROLE mlflow LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow') \gexec

ALTER ROLE loopml WITH LOGIN PASSWORD :'loopml_password';
ALTER ROLE mlflow WITH LOGIN PASSWORD :'mlflow_password';

-- Since PostgreSQL 16, creating a role no longer lets its creator act as it: needed to hand over
-- database ownership below.
GRANT loopml TO CURRENT_USER;
GRANT mlflow TO CURRENT_USER;

SELECT 'CREATE DATABASE loopml OWNER loopml'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'loopml') \gexec
SELECT 'CREATE DATABASE mlflow OWNER mlflow'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow') \gexec

ALTER DATABASE loopml OWNER TO loopml;
ALTER DATABASE mlflow OWNER TO mlflow;

-- Each user reaches its own database only.
REVOKE ALL ON DATABASE loopml FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
