package hotpath

import "github.com/lockbox-project/lockbox/api/claim"

// Short names for the claim contract in this package's tests, whose
// variables are often called claim.
const (
	ServiceAnnotation = claim.ServiceAnnotation
	SecretsDir        = claim.SecretsDir
)
