package org.kerasdynamic.core;

/** A file of the export folder as the manifest lists it: relative path, sha256 and size. */
public final class FileEntry {
  private final String path;
  private final String sha256;
  private final long bytes;

  FileEntry(String path, String sha256, long bytes) {
    this.path = path;
    this.sha256 = sha256;
    this.bytes = bytes;
  }

  public String path() {
    return path;
  }

  /** 64 lowercase hex digits. */
  public String sha256() {
    return sha256;
  }

  public long bytes() {
    return bytes;
  }
}
