export { ArtifactPathError, MAX_ARTIFACT_NAME_BYTES, resolveArtifactPath, resolveArtifactPathEffect } from "./artifact-path.ts"
