package org.kerasdynamic.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;
import static org.kerasdynamic.core.Fixtures.at;
import static org.kerasdynamic.core.Fixtures.list;
import static org.kerasdynamic.core.Fixtures.object;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** Reading an export folder: its own manifest.json, then every listed file's size and sha256. */
public class ExportLoaderTest {
  @Rule public TemporaryFolder temp = new TemporaryFolder();

  private static final byte[] MODEL = "not really a model".getBytes(StandardCharsets.UTF_8);

  private Path folder;
  private Map<String, Object> manifest;

  private Path write(byte[] model) throws IOException {
    folder = temp.newFolder("export").toPath();
    Files.write(folder.resolve(Fixtures.FILE), model);
    manifest = Fixtures.manifest(ExportLoader.sha256Hex(MODEL), MODEL.length);
    writeManifest();
    return folder;
  }

  private void writeManifest() throws IOException {
    Files.write(folder.resolve(ExportLoader.MANIFEST_NAME), Fixtures.bytes(manifest));
  }

  private String refusal() {
    return assertThrows(ManifestException.class,
        () -> ExportLoader.load(new DirectorySource(folder))).getMessage();
  }

  @Test
  public void loadsAndKeepsTheVerifiedBytes() throws IOException {
    Export export = ExportLoader.load(new DirectorySource(write(MODEL)));
    assertArrayEquals(MODEL, export.files().get(Fixtures.FILE));
    assertEquals(
        ExportLoader.sha256Hex(Files.readAllBytes(folder.resolve("manifest.json"))),
        export.manifestSha256());
    assertEquals(3, export.manifest().stages().size());
  }

  @Test
  public void sha256IsTheStandardOne() {
    assertEquals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ExportLoader.sha256Hex("abc".getBytes(StandardCharsets.US_ASCII)));
  }

  @Test
  public void refusesAChangedFile() throws IOException {
    byte[] changed = MODEL.clone();
    changed[0] ^= 1;
    write(changed);
    String message = refusal();
    assertTrue(message, message.contains("sha256 does not match"));
    assertTrue(message, message.contains("'stages.tflite'"));
  }

  @Test
  public void refusesResizedAndMissingFiles() throws IOException {
    write(new byte[] {1, 2, 3});
    assertTrue(refusal().contains("size is 3 bytes but the manifest says " + MODEL.length));
    Files.write(folder.resolve(Fixtures.FILE), new byte[MODEL.length + 10]);
    assertTrue(refusal().contains("size is more than " + MODEL.length + " bytes"));
    Files.delete(folder.resolve(Fixtures.FILE));
    assertTrue(refusal().contains("is missing from the export folder"));
    Files.createDirectory(folder.resolve(Fixtures.FILE));
    assertTrue(refusal().contains("not a regular file"));
  }

  @Test
  public void refusesSymbolicLinksEvenInsideTheFolder() throws IOException {
    write(MODEL);
    Path real = folder.resolve("real.tflite");
    Files.move(folder.resolve(Fixtures.FILE), real);
    Files.createSymbolicLink(folder.resolve(Fixtures.FILE), real);
    assertTrue(refusal().contains("symbolic link"));
  }

  @Test
  public void refusesALinkedManifest() throws IOException {
    write(MODEL);
    Path outside = temp.newFile("elsewhere.json").toPath();
    Files.move(folder.resolve("manifest.json"), outside, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
    Files.createSymbolicLink(folder.resolve("manifest.json"), outside);
    assertTrue(refusal().contains("symbolic link"));
  }

  @Test
  public void verifiesListedFilesNoStageUses() throws IOException {
    write(MODEL);
    Files.write(folder.resolve("notes.bin"), new byte[] {9});
    @SuppressWarnings("unchecked")
    List<Object> files = (List<Object>) manifest.get("files");
    files.add(object("path", "notes.bin", "sha256", Fixtures.repeat('0', 64), "bytes", 1L));
    writeManifest();
    assertTrue(refusal().contains("'notes.bin': sha256 does not match"));
  }

  @Test
  public void refusesPathsOutsideTheFolderBeforeReadingAnything() throws IOException {
    write(MODEL);
    at(manifest, "files", 0).put("path", "../" + Fixtures.FILE);
    writeManifest();
    String message = assertThrows(FileIntegrityException.class,
        () -> ExportLoader.load(new DirectorySource(folder))).getMessage();
    assertTrue(message, message.contains("manifest.json: manifest: file '../stages.tflite'"));
  }

  @Test
  public void refusesOversizedManifests() throws IOException {
    write(MODEL);
    manifest.put("padding", Fixtures.repeat(' ', ExportLoader.MAX_MANIFEST_BYTES));
    writeManifest();
    assertTrue(refusal().contains("larger than"));
  }

  @Test
  public void messagesNameTheManifestFile() throws IOException {
    write(MODEL);
    manifest.put("stages", list());
    writeManifest();
    String message = refusal();
    assertTrue(message, message.startsWith(folder.toRealPath() + "/manifest.json: manifest: "));
  }
}
