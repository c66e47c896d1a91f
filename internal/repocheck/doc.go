// Package repocheck holds tests of the repository's own conventions, the ones
// no single package can check: every package has one package comment, the
// Dockerfile pins its base images and builds reproducibly, and the compose
// examples mount what a dstack deployment needs. It has no code of its own.
package repocheck
