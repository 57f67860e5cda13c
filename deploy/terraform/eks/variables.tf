# ---------------------------------------------------------------------------------------------
# Region, naming
# ---------------------------------------------------------------------------------------------

variable "region" {
  type        = string
  description = "AWS region (e.g. eu-west-1)."

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like eu-west-1 or us-gov-west-1."
  }
}

variable "environment" {
  type        = string
  description = "Environment name: part of every resource name and tag."

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "name" {
  type        = string
  description = "Name prefix of every resource."
  default     = "loopml"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,11}$", var.name))
    error_message = "name must be 2-12 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  type        = map(string)
  description = "Extra tags added to every resource."
  default     = {}
}

# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------

variable "vpc_cidr" {
  type        = string
  description = "VPC CIDR block, /16 to /20; split into public, private (nodes) and database subnets."
  default     = "10.40.0.0/16"

  validation {
    condition = (
      can(cidrhost(var.vpc_cidr, 0)) &&
      try(tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 20, false)
    )
    error_message = "vpc_cidr must be a CIDR block between /16 and /20."
  }
}

variable "az_count" {
  type        = number
  description = "Number of availability zones used (subnets, NAT gateways, node group, Multi-AZ database)."
  default     = 3

  validation {
    condition     = contains([2, 3], var.az_count)
    error_message = "az_count must be 2 or 3."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all zones (cheaper) instead of one per zone (zone-failure tolerant)."
  default     = true
}

# ---------------------------------------------------------------------------------------------
# Cluster and node group
# ---------------------------------------------------------------------------------------------

variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes version (major.minor)."
  default     = "1.31"

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.31."
  }
}

variable "endpoint_public_access" {
  type        = bool
  description = "Expose the API server endpoint publicly (restricted to endpoint_public_access_cidrs)."
  default     = false
}

variable "endpoint_public_access_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach the public API endpoint when endpoint_public_access is true."
  default     = ["203.0.113.0/24"]

  validation {
    condition     = alltrue([for c in var.endpoint_public_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "endpoint_public_access_cidrs must be CIDR blocks, never 0.0.0.0/0."
  }
}

variable "node_instance_types" {
  type        = list(string)
  description = "EC2 instance types of the managed node group (several spread Spot capacity)."
  default     = ["m6i.large"]

  validation {
    condition     = length(var.node_instance_types) > 0 && alltrue([for t in var.node_instance_types : can(regex("^[a-z][a-z0-9-]*\\.[0-9]*(nano|micro|small|medium|large|xlarge|metal)$", t))])
    error_message = "node_instance_types must be EC2 instance types such as m6i.large or c7g.2xlarge."
  }
}

variable "node_capacity_type" {
  type        = string
  description = "ON_DEMAND or SPOT capacity for the node group."
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.node_capacity_type)
    error_message = "node_capacity_type must be ON_DEMAND or SPOT."
  }
}

variable "node_min_size" {
  type        = number
  description = "Minimum number of nodes of the managed node group."
  default     = 2

  validation {
    condition     = var.node_min_size >= 0 && var.node_min_size <= 100 && floor(var.node_min_size) == var.node_min_size
    error_message = "node_min_size must be an integer between 0 and 100."
  }
}

variable "node_desired_size" {
  type        = number
  description = "Initial number of nodes (the cluster autoscaler owns it afterwards)."
  default     = 2

  validation {
    condition     = var.node_desired_size >= var.node_min_size && var.node_desired_size <= var.node_max_size
    error_message = "node_desired_size must be between node_min_size and node_max_size."
  }
}

variable "node_max_size" {
  type        = number
  description = "Maximum number of nodes of the managed node group."
  default     = 6

  validation {
    condition     = var.node_max_size >= 1 && var.node_max_size <= 100 && floor(var.node_max_size) == var.node_max_size
    error_message = "node_max_size must be an integer between 1 and 100."
  }

  validation {
    condition     = var.node_max_size >= var.node_min_size
    error_message = "node_max_size must be at least node_min_size."
  }
}

variable "node_disk_size_gb" {
  type        = number
  description = "Root volume size of each node, in GiB."
  default     = 50

  validation {
    condition     = var.node_disk_size_gb >= 20 && var.node_disk_size_gb <= 1000
    error_message = "node_disk_size_gb must be between 20 and 1000."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Protect the database (and its final snapshot) against terraform destroy."
  default     = true
}

variable "log_retention_days" {
  type        = number
  description = "Retention of the control-plane, VPC flow and database log groups, in days."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value (e.g. 30, 90, 365)."
  }
}

# ---------------------------------------------------------------------------------------------
# RDS for PostgreSQL
# ---------------------------------------------------------------------------------------------

variable "db_instance_class" {
  type        = string
  description = "RDS instance class (e.g. db.t4g.medium, db.m7g.large)."
  default     = "db.t4g.medium"

  validation {
    condition     = can(regex("^db\\.[a-z][a-z0-9-]*\\.[0-9]*(micro|small|medium|large|xlarge)$", var.db_instance_class))
    error_message = "db_instance_class must be an RDS instance class such as db.t4g.medium or db.m7g.2xlarge."
  }
}

variable "db_engine_version" {
  type        = string
  description = "PostgreSQL major version (RDS picks the newest minor and upgrades minors automatically)."
  default     = "17"

  validation {
    condition     = contains(["15", "16", "17"], var.db_engine_version)
    error_message = "db_engine_version must be 15, 16 or 17."
  }
}

variable "db_allocated_storage_gb" {
  type        = number
  description = "Initial storage of the database, in GiB."
  default     = 20

  validation {
    condition     = var.db_allocated_storage_gb >= 20 && var.db_allocated_storage_gb <= 65536
    error_message = "db_allocated_storage_gb must be between 20 and 65536."
  }
}

variable "db_max_allocated_storage_gb" {
  type        = number
  description = "Storage autoscaling ceiling, in GiB."
  default     = 200

  validation {
    condition     = var.db_max_allocated_storage_gb >= var.db_allocated_storage_gb
    error_message = "db_max_allocated_storage_gb must be at least db_allocated_storage_gb."
  }
}

variable "db_multi_az" {
  type        = bool
  description = "Synchronous standby in another availability zone."
  default     = true
}

variable "db_iam_auth" {
  type        = bool
  description = "Enable IAM database authentication and let the workload roles connect as their database user (passwords keep working for users not granted rds_iam)."
  default     = true
}

variable "db_backup_retention_days" {
  type        = number
  description = "Days automated backups (point-in-time recovery) are kept."
  default     = 7

  validation {
    condition     = var.db_backup_retention_days >= 1 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be between 1 and 35."
  }
}

# ---------------------------------------------------------------------------------------------
# Artifacts bucket
# ---------------------------------------------------------------------------------------------

variable "artifacts_noncurrent_days" {
  type        = number
  description = "Days a replaced or deleted artifact version is kept before it is removed."
  default     = 30

  validation {
    condition     = var.artifacts_noncurrent_days >= 1
    error_message = "artifacts_noncurrent_days must be at least 1."
  }
}

# ---------------------------------------------------------------------------------------------
# Kubernetes workloads (must match deploy/k8s)
# ---------------------------------------------------------------------------------------------

variable "k8s_namespace" {
  type        = string
  description = "Kubernetes namespace of loopml's workloads."
  default     = "loopml"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.k8s_namespace))
    error_message = "k8s_namespace must be a valid Kubernetes DNS label."
  }
}

variable "k8s_service_accounts" {
  type = object({
    server     = string
    controller = string
    mlflow     = string
  })
  description = "Kubernetes service account names of the serving replicas, the controller and the MLflow tracking server."
  default = {
    server     = "loopml-server"
    controller = "loopml-controller"
    mlflow     = "loopml-mlflow"
  }

  validation {
    condition     = alltrue([for n in values(var.k8s_service_accounts) : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", n))])
    error_message = "Every service account name must be a valid Kubernetes DNS label."
  }
}

# ---------------------------------------------------------------------------------------------
# Public host and continuous deployment (deploy.yml)
# ---------------------------------------------------------------------------------------------

variable "host" {
  type        = string
  description = "Public DNS name of the loopml API (the Ingress host): HOST in the kustomize_env output."

  validation {
    condition     = can(regex("^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.host))
    error_message = "host must be a lowercase DNS name such as api.example.com."
  }
}

variable "github_repository" {
  type        = string
  description = "GitHub repository (owner/name) whose deploy.yml may deploy to this cluster through GitHub OIDC."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$", var.github_repository))
    error_message = "github_repository must look like owner/name."
  }
}

variable "github_deploy_environment" {
  type        = string
  description = "GitHub environment of the deploy.yml job that deploys to this cluster (production or staging): only its OIDC tokens get the deploy identity."
  default     = "production"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,255}$", var.github_deploy_environment))
    error_message = "github_deploy_environment must be a GitHub environment name (letters, digits, _ . -)."
  }
}

variable "github_oidc_provider_arn" {
  type        = string
  description = "ARN of an existing IAM OIDC provider for token.actions.githubusercontent.com (an account holds one per URL); empty: this root creates it."
  default     = ""

  validation {
    condition     = var.github_oidc_provider_arn == "" || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/token\\.actions\\.githubusercontent\\.com$", var.github_oidc_provider_arn))
    error_message = "github_oidc_provider_arn must be empty or the ARN of the token.actions.githubusercontent.com OIDC provider."
  }
}

variable "deploy_runner_cidrs" {
  type        = list(string)
  description = "CIDR blocks inside the VPC (or peered with it) of the self-hosted runner that runs deploy.yml: allowed to the private API endpoint on 443. Empty: a runner on the cluster's own nodes."
  default     = []

  validation {
    condition     = alltrue([for c in var.deploy_runner_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "deploy_runner_cidrs must be CIDR blocks, never 0.0.0.0/0."
  }
}
