# ---------------------------------------------------------------------------------------------
# ECR repository for loopml's image: immutable tags, scan on push, KMS-encrypted, untagged images
# expire after 14 days and only the 50 most recent tagged ones are kept.
# ---------------------------------------------------------------------------------------------

resource "aws_ecr_repository" "loopml" {
  name                 = "${local.prefix}/loopml"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = false

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.data.arn
  }
}

resource "aws_ecr_lifecycle_policy" "loopml" {
  repository = aws_ecr_repository.loopml.name

  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Expire untagged images after 14 days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = 14
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep the 50 most recent images"
        selection = {
          tagStatus   = "any"
          countType   = "imageCountMoreThan"
          countNumber = 50
        }
        action = { type = "expire" }
      },
    ]
  })
}
