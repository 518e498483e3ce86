package org.kerasdynamic.core;

/**
 * A manifest, policy file or trace is malformed, or disagrees with the files it names.
 *
 * <p>The JVM counterpart of the Python runtime's {@code ManifestError}: every refusal of the
 * reader is one of these (or its subclass {@link FileIntegrityException}), and its message names
 * the file, stage, tensor or exit at fault.
 */
public class ManifestException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public ManifestException(String message) {
    super(message);
  }
}
