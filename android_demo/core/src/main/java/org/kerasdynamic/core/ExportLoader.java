package org.kerasdynamic.core;

import java.io.IOException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

/**
 * Reads an export folder: manifest.json (at most {@link #MAX_MANIFEST_BYTES}), parsed strictly
 * and validated, then every file it lists checked for its size and sha256 (all of them, as the
 * Python runtime checks all of them, even one no stage uses).
 */
public final class ExportLoader {
  public static final String MANIFEST_NAME = "manifest.json";
  public static final int MAX_MANIFEST_BYTES = 16 << 20;

  /** Java arrays hold at most this many bytes; larger model files are refused. */
  private static final long MAX_FILE_BYTES = Integer.MAX_VALUE - 16;

  private ExportLoader() {}

  /**
   * Loads and verifies the export in {@code folder}.
   *
   * @throws ManifestException naming the manifest or file at fault
   * @throws IOException if a file cannot be read
   */
  public static Export load(FileSource folder) throws IOException {
    String source = folder.describe() + "/" + MANIFEST_NAME;
    byte[] text = folder.read(MANIFEST_NAME, MAX_MANIFEST_BYTES);
    if (text.length > MAX_MANIFEST_BYTES) {
      throw new ManifestException(
          source + ": larger than " + MAX_MANIFEST_BYTES + " bytes; not an export manifest.");
    }
    Manifest manifest;
    try {
      manifest = ManifestParser.parse(StrictJson.parse(text, source));
    } catch (FileIntegrityException e) {
      throw new FileIntegrityException(source + ": " + e.getMessage());
    } catch (ManifestException e) {
      throw new ManifestException(
          e.getMessage().startsWith(source) ? e.getMessage() : source + ": " + e.getMessage());
    }
    Set<String> used = new HashSet<>();
    for (StageSpec stage : manifest.stages().values()) {
      used.add(stage.file());
    }
    Map<String, byte[]> files = new HashMap<>();
    for (FileEntry entry : manifest.files()) {
      byte[] bytes = verified(folder, entry);
      if (used.contains(entry.path())) {
        files.put(entry.path(), bytes);
      }
    }
    return new Export(manifest, sha256Hex(text), files);
  }

  private static byte[] verified(FileSource folder, FileEntry entry) throws IOException {
    String where = "manifest: file '" + entry.path() + "'";
    if (entry.bytes() > MAX_FILE_BYTES) {
      throw new FileIntegrityException(
          where + ": " + entry.bytes() + " bytes is more than this reader can hold.");
    }
    byte[] bytes;
    try {
      bytes = folder.read(entry.path(), entry.bytes());
    } catch (FileIntegrityException e) {
      throw new FileIntegrityException(where + ": " + e.getMessage());
    }
    if (bytes.length != entry.bytes()) {
      String size = bytes.length > entry.bytes() ? "more than " + entry.bytes() : "" + bytes.length;
      throw new FileIntegrityException(
          where + ": size is " + size + " bytes but the manifest says " + entry.bytes()
              + "; the file was changed or truncated.");
    }
    if (!sha256Hex(bytes).equals(entry.sha256())) {
      throw new FileIntegrityException(
          where + ": sha256 does not match the manifest; the file was changed after export.");
    }
    return bytes;
  }

  /** Lowercase hex sha256 of {@code bytes}. */
  public static String sha256Hex(byte[] bytes) {
    MessageDigest digest;
    try {
      digest = MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("SHA-256 is missing from this Java runtime", e);
    }
    StringBuilder hex = new StringBuilder(64);
    for (byte b : digest.digest(bytes)) {
      hex.append(Character.forDigit((b >> 4) & 0xF, 16)).append(Character.forDigit(b & 0xF, 16));
    }
    return hex.toString();
  }
}
