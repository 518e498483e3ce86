package org.kerasdynamic.core;

import java.io.IOException;

/**
 * Where an export folder's files are read from: a directory on the JVM ({@link
 * DirectorySource}), the app's assets on Android.
 */
public interface FileSource {
  /**
   * The bytes of the file at {@code relativePath} (already checked by the reader: relative, no
   * {@code ..}). Implementations refuse links and anything that is not a regular file, and stop
   * reading past {@code maxBytes} (returning {@code maxBytes + 1} bytes then, so the caller can
   * tell the file is too long).
   *
   * @throws FileIntegrityException if the file is missing, a link or not a regular file
   * @throws IOException if it cannot be read
   */
  byte[] read(String relativePath, long maxBytes) throws IOException;

  /** The folder, for messages. */
  String describe();
}
