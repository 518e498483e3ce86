package org.kerasdynamic.core;

import java.util.Collections;
import java.util.Map;

/**
 * A verified export: its manifest, the sha256 of the manifest file's bytes, and the bytes of
 * every model file a stage uses, exactly the bytes whose hash was checked (hand these to the
 * interpreter, never the path again, so that a file swapped after the check is never run).
 */
public final class Export {
  private final Manifest manifest;
  private final String manifestSha256;
  private final Map<String, byte[]> files;

  Export(Manifest manifest, String manifestSha256, Map<String, byte[]> files) {
    this.manifest = manifest;
    this.manifestSha256 = manifestSha256;
    this.files = Collections.unmodifiableMap(files);
  }

  public Manifest manifest() {
    return manifest;
  }

  /** Hex sha256 of manifest.json as read (traces name the manifest they were made with). */
  public String manifestSha256() {
    return manifestSha256;
  }

  /** Verified bytes of each model file used by a stage, by relative path. */
  public Map<String, byte[]> files() {
    return files;
  }
}
